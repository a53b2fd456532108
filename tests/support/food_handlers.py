"""The food handler tests' view of the roster: the sample's documented figures
recomputed from employees.json by the rule, small rosters of our own, and a source
server that counts what it answered."""

from __future__ import annotations

import io
import json
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, timedelta
from pathlib import Path

from django.utils import timezone
from fpdf import FPDF
from pypdf import PdfReader

from operations.models import FoodHandlerCertificate
from tests.support.source_server import SAMPLE, Handler, SourceServer

AS_OF = date(2025, 6, 15)  # the date the sample's documented figures are for (a report)
FAR = "2099-01-01"  # a card that is valid whatever today is
ROSTER = SAMPLE / "roster"
STATUSES = ["valid", "expiring", "expired", "missing", "overdue"]
# Documented in sample_data/README.md; checked against the files below, not trusted.
BAD = {
    "L08-E003": "html",
    "L11-E047": "html",
    "L05-E054": "empty",
    "L06-E035": "empty",
    "L02-E015": "truncated",
    "L04-E027": "truncated",
    "L01-E071": "missing",
    "L10-E001": "missing",
}


def today() -> date:
    return timezone.localdate()


def employees(root: Path = ROSTER) -> list[dict]:
    return json.loads((root / "employees.json").read_text())["employees"]


def food_handlers_by_id(root: Path = ROSTER) -> dict[str, dict]:
    return {e["employee_id"]: e for e in employees(root) if e["handles_food"]}


def looks_like_a_pdf(path: Path) -> bool:
    """The test's own judgement of a certificate file, independent of operations.pdfs."""
    if not path.is_file():
        return False
    data = path.read_bytes()
    if not data.startswith(b"%PDF-") or b"%%EOF" not in data[-64:]:
        return False
    return len(PdfReader(io.BytesIO(data)).pages) >= 1


def expected_statuses(as_of: date | None = None, root: Path = ROSTER) -> dict[str, str]:
    """The rule again, straight from employees.json and the files (as of today)."""
    as_of = as_of or today()
    out = {}
    for emp_id, e in food_handlers_by_id(root).items():
        card = e["food_handler"]
        if card and looks_like_a_pdf(root / card["certificate_url"]):
            expires = date.fromisoformat(card["expires_on"])
            out[emp_id] = (
                "expired"
                if expires < as_of
                else "expiring"
                if expires <= as_of + timedelta(days=30)
                else "valid"
            )
        else:
            hired = date.fromisoformat(e["hire_date"])
            out[emp_id] = "overdue" if hired + timedelta(days=30) < as_of else "missing"
    return out


def expected_counts(statuses: dict[str, str], root: Path = ROSTER) -> dict[str, dict[str, int]]:
    handlers = food_handlers_by_id(root)
    counts: dict[str, dict[str, int]] = {}
    for e in employees(root):  # every roster location, even one without food handlers
        counts.setdefault(e["location_id"], dict.fromkeys(STATUSES, 0))
    for emp_id, status in statuses.items():
        counts[handlers[emp_id]["location_id"]][status] += 1
    return counts


def stored_files(folder: Path) -> dict[str, tuple[int, int]]:
    """Every stored file with its size and modification time."""
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def stored_state() -> dict[str, tuple]:
    return {
        r.employee_id: (r.location_id, r.status, r.card_number, r.document, r.content_hash)
        for r in FoodHandlerCertificate.objects.all()
    }


class CountingHandler(Handler):
    """The sample source API, noting the status of every answer it sends."""

    disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms stall each

    def send_response(self, code: int, message: str | None = None) -> None:
        self.server.answered.append((self.path, code))
        super().send_response(code, message)


@contextmanager
def counting_server() -> Iterator[SourceServer]:
    server = SourceServer()
    server.RequestHandlerClass = CountingHandler
    server.answered = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def without_reasons(result: dict) -> dict:
    """A result with only the ids of the refused certificates (reasons name the source)."""
    return {**result, "failed": sorted(result["failed"])}


def certificate_answers(server: SourceServer) -> Counter:
    return Counter(code for path, code in server.answered if "/roster/certificates/" in path)


def certificate(name: str, number: str, expires: str) -> bytes:
    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("Helvetica", size=12)
    pdf.cell(0, 10, f"{name} {number} expires {expires}")
    return bytes(pdf.output())


def person(
    emp_id: str,
    name: str,
    *,
    hired: str,
    card: str | None = None,
    expires: str = FAR,
    job: str = "Line Cook",
) -> dict:
    return {
        "employee_id": emp_id,
        "name": name,
        "location_id": emp_id[:3],
        "job": job,
        "hire_date": hired,
        "email": "x@example.com",
        "handles_food": True,
        "food_handler": None
        if card is None
        else {
            "card_number": card,
            "issuer": "ServSafe",
            "issued_on": "2024-01-01",
            "expires_on": expires,
            "certificate_url": f"certificates/{card}.pdf",
        },
    }


def write_roster(root: Path, people: list[dict], *, pdf: dict[str, bytes] | None = None) -> None:
    (root / "certificates").mkdir(parents=True, exist_ok=True)
    (root / "employees.json").write_text(json.dumps({"employees": people}))
    for p in people:
        card = p["food_handler"]
        if card and (pdf is None or card["card_number"] in pdf):
            content = (pdf or {}).get(card["card_number"]) or certificate(
                p["name"], card["card_number"], card["expires_on"]
            )
            (root / card["certificate_url"]).write_bytes(content)
