"""Staff-page sign-in through Entra ID (django-auth-adfs's views), in Entra ID mode only.

Included at the site root: ``oauth2/login``, ``oauth2/callback`` (the redirect URI
to register in Entra ID), ``oauth2/logout``.
"""

from django.conf import settings
from django.urls import include, path

urlpatterns = [path("oauth2/", include("django_auth_adfs.urls"))] if settings.ENTRA_MODE else []
