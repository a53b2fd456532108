"""What Entra ID validation depends on, read from Django settings (so overrides take effect)."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings


@dataclass(frozen=True)
class EntraConfig:
    """The ``AZURE_*`` and role settings; a change of any of them starts afresh (``tokens``)."""

    tenant_id: str
    client_id: str
    audiences: tuple[str, ...]
    authority_host: str
    ca_bundle: str
    admin_role: str
    runner_role: str

    @classmethod
    def from_settings(cls) -> EntraConfig:
        client_id = settings.AZURE_CLIENT_ID
        audience = settings.AZURE_AUDIENCE or f"api://{client_id}"
        return cls(
            tenant_id=settings.AZURE_TENANT_ID,
            client_id=client_id,
            audiences=tuple(dict.fromkeys(a for a in (audience, client_id) if a)),
            authority_host=settings.AZURE_AUTHORITY_HOST,
            ca_bundle=settings.AZURE_CA_BUNDLE,
            admin_role=settings.TASK_ADMIN_ROLE,
            runner_role=settings.TASK_RUNNER_ROLE,
        )

    @property
    def discovery_url(self) -> str:
        return (
            f"https://{self.authority_host}/{self.tenant_id}/v2.0/.well-known/"
            f"openid-configuration?appid={self.client_id}"
        )
