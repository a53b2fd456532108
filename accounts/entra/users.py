"""Entra ID users: the Django user of a validated token, kept in line with its claims.

Users are keyed on ``oid`` + ``tid`` (``accounts.models.EntraIdentity``), never on
a name that can change or be reused, and never linked to an existing user by
name. They are named from ``preferred_username`` or ``upn``; the token's
``roles`` become groups and the admin role (``TASK_ADMIN_ROLE``) sets staff.
Rows are written only when something changed (the library saves the user on
every authentication).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from django.contrib.auth import get_user_model
from django.db import IntegrityError, models, transaction

from accounts.entra.config import EntraConfig
from accounts.models import EntraIdentity

logger = logging.getLogger(__name__)


class EntraUserMixin:
    """User sync for a django-auth-adfs backend (its ``update_user_groups`` mirrors roles)."""

    if TYPE_CHECKING:  # provided by the django-auth-adfs backend this is mixed into

        def update_user_groups(self, user: Any, claim_groups: list[str]) -> None: ...

    def entra_config(self) -> EntraConfig:
        return EntraConfig.from_settings()

    def sync_user(self, claims: dict[str, Any]) -> Any | None:
        """The user keyed on ``tid`` + ``oid``, brought in line with the token; None if inactive."""
        config = self.entra_config()
        name = claims.get("preferred_username") or claims.get("upn") or claims.get("unique_name")
        if not isinstance(name, str) or not name:
            logger.info("Entra ID token refused: no preferred_username or upn")
            return None
        link = (
            EntraIdentity.objects.select_related("user")
            .filter(tenant_id=claims["tid"], object_id=claims["oid"])
            .first()
        )
        user = link.user if link else self.create_entra_user(claims, name)
        if not user.is_active:
            logger.info("Entra ID token refused: user %s is inactive", user.pk)
            return None
        roles = token_roles(claims)
        changed = []
        if user.get_username() != name and _username_free(name, user.pk):
            user.username = name
            changed.append("username")
        for field, claim in (
            ("first_name", "given_name"),
            ("last_name", "family_name"),
            ("email", "email"),
        ):
            value = claims.get(claim)
            if isinstance(value, str) and value and getattr(user, field) != value:
                model_field = user._meta.get_field(field)
                if isinstance(model_field, models.Field):  # not a relation: it has a length
                    value = value[: model_field.max_length]
                setattr(user, field, value)
                changed.append(field)
        is_staff = config.admin_role in roles
        if user.is_staff != is_staff:
            user.is_staff = is_staff
            changed.append("is_staff")
        if changed:
            user.save(update_fields=changed)
        # The library's group mirroring writes only when the set of names differs.
        self.update_user_groups(user, sorted(roles))
        return user

    def create_entra_user(self, claims: dict[str, Any], name: str) -> Any:
        """A new user for a new (tid, oid); a name already taken gets a suffix, never a link."""
        user_model = get_user_model()
        username = name if _username_free(name, None) else f"{name[:140]}~{claims['oid'][:8]}"
        try:
            with transaction.atomic():
                user = user_model(username=username)
                user.set_unusable_password()
                user.save()
                EntraIdentity.objects.create(
                    tenant_id=claims["tid"], object_id=claims["oid"], user=user
                )
        except IntegrityError:
            # A concurrent first request created it (or took the name): use theirs.
            link = (
                EntraIdentity.objects.select_related("user")
                .filter(tenant_id=claims["tid"], object_id=claims["oid"])
                .first()
            )
            if link is None:
                raise
            return link.user
        logger.info("Entra ID user %s created for oid %s", user.pk, claims["oid"])
        return user


def token_roles(claims: dict[str, Any]) -> frozenset[str]:
    """The token's app roles (``roles``: a list, or a lone string), empty if malformed."""
    roles = claims.get("roles", [])
    if isinstance(roles, str):
        roles = [roles]
    if not isinstance(roles, list):
        return frozenset()
    return frozenset(r for r in roles if isinstance(r, str) and r)


def _username_free(name: str, user_pk: Any) -> bool:
    user_model = get_user_model()
    taken = user_model.objects.filter(**{user_model.USERNAME_FIELD: name})
    if user_pk is not None:
        taken = taken.exclude(pk=user_pk)
    return not taken.exists()
