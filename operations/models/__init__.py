"""What the jobs store: sales summaries, meal period violations, invoices, the sync
watermark, AP batches, job leases, tip shares and statements, food handler
certificates and packets (current, archived, and who left when).

Every table is keyed so that a re-run or a second run at the same time
replaces or skips, never duplicates: summaries on (business_date, location),
meal period violations on (business_date, location, employee, shift),
invoices on (vendor, invoice number), export lines on (invoice, content hash),
tip shares on (business_date, location, employee), certificates on the employee,
packets on the location. Tip statements sent are a history, one row per send:
``email_tips`` compares with the latest under a per-statement lock.
"""

from __future__ import annotations

from .food_handlers import (
    FoodHandlerArchivedPacket,
    FoodHandlerCertificate,
    FoodHandlerDeparture,
    FoodHandlerPacket,
    FoodHandlerStatus,
)
from .invoices import AccountingExport, AccountingExportLine, Invoice, SyncWatermark
from .runs import (
    AlertDelivery,
    AlertRoute,
    FailureAcknowledgement,
    JobRun,
    NotifyRequest,
    split_addresses,
    validate_email_list,
)
from .sales import DailySalesSummary, MealPeriodViolation
from .tips import TipPool, TipShare, TipStatementDelivery

# validate_email_list: named by migration 0004 as operations.models.validate_email_list.
__all__ = [
    "split_addresses",
    "validate_email_list",
    "AccountingExport",
    "AccountingExportLine",
    "AlertDelivery",
    "AlertRoute",
    "DailySalesSummary",
    "FailureAcknowledgement",
    "FoodHandlerArchivedPacket",
    "FoodHandlerCertificate",
    "FoodHandlerDeparture",
    "FoodHandlerPacket",
    "FoodHandlerStatus",
    "Invoice",
    "JobRun",
    "MealPeriodViolation",
    "NotifyRequest",
    "SyncWatermark",
    "TipPool",
    "TipShare",
    "TipStatementDelivery",
]
