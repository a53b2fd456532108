from django.contrib import admin

from .models import EntraIdentity


@admin.register(EntraIdentity)
class EntraIdentityAdmin(admin.ModelAdmin):
    list_display = ("user", "object_id", "tenant_id", "created_at")
    search_fields = ("user__username", "object_id")
    readonly_fields = ("tenant_id", "object_id", "user", "created_at")
