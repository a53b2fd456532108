"""django-auth-adfs configuration for Entra ID mode, loaded by the library itself.

``AUTH_ADFS["SETTINGS_CLASS"]`` names ``EntraSettings``: the library forbids
``SERVER`` together with ``TENANT_ID``, yet the tests (and sovereign clouds) need
another authority host, and its ``CA_BUNDLE`` is silently overridden by
``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE``. Nothing here imports models: the
library imports this module while Django is still loading apps, and only the
library may import it (importing it first would import it twice, circularly:
``django_auth_adfs.config`` instantiates this class when it is imported).
"""

from __future__ import annotations

from django.conf import settings as django_settings
from django_auth_adfs.config import Settings

from accounts.entra.http import ca_bundle


class EntraSettings(Settings):
    """The library's settings, pointed at ``AZURE_AUTHORITY_HOST`` with v2.0 endpoints."""

    def __init__(self) -> None:
        super().__init__()
        self.SERVER = django_settings.AZURE_AUTHORITY_HOST
        self.CA_BUNDLE = ca_bundle()
        self.VERSION = "v2.0"
        audience = django_settings.AZURE_AUDIENCE or f"api://{self.CLIENT_ID}"
        # The code flow asks for an access token for this API, so the staff pages'
        # token is validated exactly like an MSAL client's.
        self.SCOPES = ["openid", "profile", f"{audience}/.default"]
