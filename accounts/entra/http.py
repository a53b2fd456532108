"""HTTP to the Entra ID authority with the configured trust, whatever the environment says."""

from __future__ import annotations

from typing import Any

import requests
import requests.adapters
from django.conf import settings as django_settings
from urllib3.util.retry import Retry


def ca_bundle() -> str | bool:
    """``verify=`` for the authority: the configured CA file, else the system store."""
    return django_settings.AZURE_CA_BUNDLE or True


class PinnedTrustSession(requests.Session):
    """A session whose TLS trust is its own ``verify``, whatever the environment says.

    ``requests`` lets ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE`` replace a session's
    ``verify`` (only a per-request ``verify=`` wins). Clearing ``trust_env`` would
    also drop proxy settings, so only ``verify`` is pinned here.
    """

    def __init__(self, verify: str | bool, *, retries: int = 1) -> None:
        super().__init__()
        self.verify = verify
        retry = Retry(total=retries, connect=retries, read=retries, backoff_factor=0.2)
        self.mount("https://", requests.adapters.HTTPAdapter(max_retries=retry))

    def merge_environment_settings(
        self, url: Any, proxies: Any, stream: Any, verify: Any, cert: Any
    ) -> dict[str, Any]:
        merged = super().merge_environment_settings(url, proxies, stream, verify, cert)
        if verify is None or verify is True:
            merged["verify"] = self.verify
        return merged


def pin_library_session() -> None:
    """Give the library's own provider config (code flow, logout) the pinned trust."""
    # Imported here, not at the top: the library's config module imports
    # ``adfs_settings``, which imports this module, while the library loads.
    from django_auth_adfs.config import provider_config, settings

    session = PinnedTrustSession(ca_bundle(), retries=settings.RETRIES)
    session.proxies = provider_config.session.proxies
    provider_config.session = session
