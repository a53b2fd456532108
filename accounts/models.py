"""The link from an Entra ID account to a Django user.

Entra ID names a person by ``oid`` within a tenant ``tid``; ``upn`` and
``preferred_username`` can change or be reused, so they only name the user and
never decide which row a token belongs to.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models


class EntraIdentity(models.Model):
    tenant_id = models.CharField(max_length=64)
    object_id = models.CharField(max_length=64)
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="entra_identity"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant_id", "object_id"], name="entra_tid_oid")
        ]
        verbose_name = "Entra ID identity"
        verbose_name_plural = "Entra ID identities"

    def __str__(self) -> str:
        return f"{self.object_id}@{self.tenant_id}"
