"""The jobs' outputs in the admin, browsable and read-only: the jobs are their only writers.

Alert routes are the exception: configuration, edited here.
"""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from tasks.auth.permissions import can_see_operation

from .models import (
    AccountingExport,
    AccountingExportLine,
    AlertDelivery,
    AlertRoute,
    DailySalesSummary,
    FoodHandlerArchivedPacket,
    FoodHandlerCertificate,
    FoodHandlerDeparture,
    FoodHandlerPacket,
    Invoice,
    JobRun,
    MealPeriodViolation,
    SyncWatermark,
    TipPool,
    TipShare,
    TipStatementDelivery,
)


class ReadOnlyAdmin(admin.ModelAdmin):
    """Every field shown, nothing editable, nothing added or deleted by hand."""

    def get_readonly_fields(self, request: HttpRequest, obj=None):
        return [field.name for field in self.model._meta.fields]

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(DailySalesSummary)
class DailySalesSummaryAdmin(ReadOnlyAdmin):
    list_display = (
        "business_date",
        "location_id",
        "location_name",
        "gross_sales",
        "net_sales",
        "tax",
        "tips",
        "check_count",
        "guest_count",
        "average_check",
    )
    list_filter = ("business_date", "location_id")
    search_fields = ("location_id", "location_name", "task_id")
    date_hierarchy = "business_date"


@admin.register(MealPeriodViolation)
class MealPeriodViolationAdmin(ReadOnlyAdmin):
    list_display = (
        "business_date",
        "location_id",
        "employee_id",
        "employee_name",
        "shift_id",
        "hours_worked",
        "first_meal",
        "second_meal",
        "premium_hours",
        "premium_pay",
    )
    list_filter = ("business_date", "location_id", "first_meal", "second_meal")
    search_fields = ("location_id", "employee_id", "employee_name", "shift_id", "task_id")
    date_hierarchy = "business_date"


@admin.register(Invoice)
class InvoiceAdmin(ReadOnlyAdmin):
    list_display = (
        "vendor_id",
        "invoice_number",
        "document_type",
        "invoice_date",
        "location_id",
        "total",
        "exported",
    )
    list_filter = ("vendor_id", "document_type", "invoice_date")
    search_fields = ("vendor_id", "invoice_number")
    date_hierarchy = "invoice_date"

    @admin.display(boolean=True, description="exported")
    def exported(self, invoice: Invoice) -> bool:
        return invoice.exported_hash == invoice.content_hash


class AccountingExportLineInline(admin.TabularInline):
    model = AccountingExportLine
    fields = ("invoice", "content_hash")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = False

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(AccountingExport)
class AccountingExportAdmin(ReadOnlyAdmin):
    list_display = ("batch_id", "state", "invoice_count", "created_at", "sent_at", "task_id")
    list_filter = ("state", "created_at")
    search_fields = ("batch_id", "task_id", "reference")
    inlines = [AccountingExportLineInline]


@admin.register(SyncWatermark)
class SyncWatermarkAdmin(ReadOnlyAdmin):
    list_display = ("name", "value", "updated_at")


@admin.register(JobRun)
class JobRunAdmin(ReadOnlyAdmin):
    list_display = (
        "task_id",
        "operation",
        "worker",
        "attempts",
        "started_at",
        "finished_at",
        "outcome",
    )
    list_filter = ("operation", "outcome")
    search_fields = ("task_id", "worker")


class PersonalDataAdmin(ReadOnlyAdmin):
    """Rows of a personal-data operation: only for those who may see its tasks."""

    operation = ""

    def has_view_permission(self, request: HttpRequest, obj=None) -> bool:
        return can_see_operation(request.user, self.operation) and super().has_view_permission(
            request, obj
        )

    def has_module_permission(self, request: HttpRequest) -> bool:
        return can_see_operation(request.user, self.operation) and super().has_module_permission(
            request
        )


@admin.register(TipShare)
class TipShareAdmin(PersonalDataAdmin):
    operation = "transform_tips"
    list_display = (
        "business_date",
        "location_id",
        "employee_id",
        "employee_name",
        "job",
        "hours",
        "points",
        "card_tips",
        "cash_tips",
    )
    list_filter = ("business_date", "location_id", "job")
    search_fields = ("employee_id", "employee_name", "location_id", "task_id")
    date_hierarchy = "business_date"


@admin.register(TipPool)
class TipPoolAdmin(PersonalDataAdmin):
    operation = "transform_tips"
    list_display = (
        "business_date",
        "location_id",
        "card_tips",
        "cash_tips",
        "eligible_hours",
        "employees",
    )
    list_filter = ("business_date", "location_id")
    date_hierarchy = "business_date"


@admin.register(TipStatementDelivery)
class TipStatementDeliveryAdmin(PersonalDataAdmin):
    operation = "email_tips"
    list_display = ("employee_id", "period_start", "period_end", "correction", "state", "sent_at")
    list_filter = ("period_start", "correction")
    search_fields = ("employee_id", "task_id")


@admin.register(FoodHandlerCertificate)
class FoodHandlerCertificateAdmin(PersonalDataAdmin):
    operation = "update_food_handler_pdfs"
    list_display = (
        "employee_id",
        "employee_name",
        "location_id",
        "job",
        "card_number",
        "expires_on",
        "status",
        "as_of",
    )
    list_filter = ("status", "location_id", "job")
    search_fields = ("employee_id", "employee_name", "card_number")


@admin.register(FoodHandlerPacket)
class FoodHandlerPacketAdmin(PersonalDataAdmin):
    operation = "update_food_handler_pdfs"
    list_display = ("location_id", "location_name", "as_of", "built_at")


@admin.register(FoodHandlerArchivedPacket)
class FoodHandlerArchivedPacketAdmin(PersonalDataAdmin):
    """Reports (a past as_of) and replaced packets, kept for the retention period."""

    operation = "update_food_handler_pdfs"
    list_display = ("location_id", "kind", "as_of", "archived_at", "task_id")
    list_filter = ("kind", "location_id")


@admin.register(FoodHandlerDeparture)
class FoodHandlerDepartureAdmin(PersonalDataAdmin):
    """People no longer on the roster: their documents go once the retention has passed."""

    operation = "update_food_handler_pdfs"
    list_display = ("employee_id", "location_id", "departed_at", "purged_at")
    search_fields = ("employee_id",)


@admin.register(AlertRoute)
class AlertRouteAdmin(admin.ModelAdmin):
    """Who is told when a task ends failed or completed_with_errors: editable configuration."""

    list_display = (
        "__str__",
        "operation_label",
        "emails",
        "webhook_host",
        "on_failed",
        "on_completed_with_errors",
        "enabled",
        "updated_at",
    )
    list_filter = ("enabled", "operation", "on_failed", "on_completed_with_errors")
    list_editable = ("enabled",)
    search_fields = ("name", "emails")
    fields = (
        "name",
        "operation",
        "emails",
        "webhook_url",
        "on_failed",
        "on_completed_with_errors",
        "enabled",
    )

    @admin.display(description="operation")
    def operation_label(self, route: AlertRoute) -> str:
        return route.operation or "all operations"

    @admin.display(description="webhook")
    def webhook_host(self, route: AlertRoute) -> str:
        # The URL's path is its secret: the list shows the host only.
        from urllib.parse import urlsplit

        return urlsplit(route.webhook_url).hostname or "" if route.webhook_url else ""


@admin.register(AlertDelivery)
class AlertDeliveryAdmin(ReadOnlyAdmin):
    list_display = (
        "task_id",
        "operation",
        "event",
        "destination",
        "state",
        "attempts",
        "created_at",
        "sent_at",
    )
    list_filter = ("state", "event", "channel", "operation")
    search_fields = ("task_id", "destination")
