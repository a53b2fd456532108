"""Microsoft Entra ID access tokens, built on django-auth-adfs: one module per job.

``tokens.authenticate_entra_token`` is what ``tasks.auth.bearer.authenticate_bearer``
calls in Entra ID mode, for REST and WebSocket alike. The package extends the
library (``ProviderConfig``, ``AdfsAccessTokenBackend``, ``AdfsAuthCodeBackend``,
``Settings``) where it falls short for an API under load:

- ``keys``: the discovery document and the signing keys (``EntraProviderConfig``).
  Keys are picked by ``kid`` (the library tries every cached key in turn); an
  unknown ``kid`` reloads the keys at once, so a rotation needs no restart (the
  library reloads only every 24 hours), but such reloads are rate-limited and a
  ``kid`` missing from a fresh key set is not looked up again for a while.
- ``tokens``: validation. Only tokens that otherwise look like ours (tenant,
  issuer, audience, not expired) may ask for a key reload, so forged ``kid``
  values cannot hammer the issuer; the v1.0 and the v2.0 issuer of the tenant
  are both accepted (the library checks one), and ``tid`` must be the tenant. A
  validated token's identity is cached until it expires, so a busy client or a
  reconnect storm costs no network call and no database write per request.
  The library's authentication backends live here too.
- ``users``: users are keyed on ``oid`` + ``tid`` (``accounts.models.EntraIdentity``),
  not on a name that can change or be reused; ``roles`` become groups and the
  admin role sets staff; rows are written only when something changed (the
  library saves the user on every authentication).
- ``config``: what validation depends on, read from Django settings.
- ``http``: the authority's CA file wins over ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE``.
- ``adfs_settings``: the library's ``Settings`` (``AUTH_ADFS["SETTINGS_CLASS"]``).

This ``__init__`` imports nothing: the library imports ``adfs_settings`` while it
is itself being imported, so the package must not pull in the library first.
"""
