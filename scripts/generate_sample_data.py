#!/usr/bin/env python
"""Generate the committed sample data set under ``sample_data/`` (deterministic, seeded).

Why a generator: the data must be realistic (volumes, voids, refunds, late-night
bar checks, credit memos) and reproducible, and the deliberately bad records must
be documented in one place. Running it again with the same seed rewrites
byte-identical files (gzip headers carry no timestamp, the PDFs a fixed creation
date). The certificates need fpdf2. Each part draws from its own random stream
(seed, seed + 1, ...): a new part takes a new stream, so the files already
committed do not change.

Layout written::

    sample_data/sales/locations.json
    sample_data/sales/<business_date>/<location_id>.json.gz   checks of one location-day
    sample_data/invoices/vendors.json
    sample_data/invoices/invoices.json                        most vendors, JSON
    sample_data/invoices/invoices_V12.csv                     one vendor exports CSV
    sample_data/timeclock/locations.json
    sample_data/timeclock/<business_date>/<location_id>.json  shifts of one location-day
    sample_data/roster/employees.json                         the timeclock rosters, with hire
                                                              date, email, food handler card
    sample_data/roster/certificates/<card_number>.pdf         a card's certificate (one page)
    sample_data/tips/policies.json                            tip pool points per job, by location
    sample_data/sales/<business_date>/<location_id>.cash-tips.json
                                                              cash tips declared that day

Deliberately bad records (also listed in ``sample_data/README.md``):

* sales ``2025-06-10/L07.json.gz`` is a truncated (corrupt) gzip file;
* sales ``2025-06-12/L03.json.gz`` has a check whose item quantity is not a number;
* sales ``2025-06-13/L11.json.gz`` is missing;
* timeclock ``2025-06-05/L08.json`` is truncated (not valid JSON);
* timeclock ``2025-06-09/L10.json`` has a shift whose clock-out time is malformed;
* timeclock ``2025-06-14/L04.json`` is missing;
* invoices that do not add up, from an unknown vendor, with a negative quantity
  that is not a credit memo, without an invoice number, or with impossible dates;
* food handler cards as of 2025-06-15: 15 expiring within 30 days, 15 expired,
  12 food handlers without a card past the 30-day grace ("overdue") and 8 new
  hires without one yet ("missing");
* certificates of otherwise valid cards: an HTML error page saved as .pdf
  (L08-E003, L11-E047), empty (L05-E054, L06-E035), truncated to a third
  (L02-E015, L04-E027), not written at all (L01-E071, L10-E001);
* employee emails: empty (L03-E044, L10-E056), invalid (L04-E017, L07-E003),
  on the domain ``refused.example.com`` that the test SMTP server refuses
  (L05-E039, L08-E037);
* tips: location L09 has no tip policy.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import json
import random
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

SEED = 20250602
FIRST_DATE = date(2025, 6, 2)
DAYS = 14

LOCATIONS = [
    # id, name, timezone, base checks per day, tax rate (basis points), has bar
    ("L01", "Midtown Grill", "America/New_York", 1150, 888, True),
    ("L02", "Harbor Kitchen", "America/New_York", 820, 663, True),
    ("L03", "Union Square Cafe", "America/New_York", 640, 888, False),
    ("L04", "Lakeview Tavern", "America/Chicago", 930, 1025, True),
    ("L05", "Wicker Park Diner", "America/Chicago", 520, 1025, False),
    ("L06", "River North Bistro", "America/Chicago", 710, 1025, True),
    ("L07", "LoDo Smokehouse", "America/Denver", 600, 881, True),
    ("L08", "Cherry Creek Kitchen", "America/Denver", 380, 881, False),
    ("L09", "Mission Taqueria", "America/Los_Angeles", 1240, 863, False),
    ("L10", "Venice Beach Grill", "America/Los_Angeles", 890, 950, True),
    ("L11", "Pearl District Pub", "America/Los_Angeles", 450, 0, True),
    ("L12", "Airport Express", "America/New_York", 1020, 888, False),
]

MENU = [
    # sku, name, price in cents, category
    ("APP-001", "Wings", 1395, "food"),
    ("APP-002", "Nachos", 1250, "food"),
    ("APP-003", "Calamari", 1495, "food"),
    ("APP-004", "Soup of the Day", 795, "food"),
    ("SAL-001", "Caesar Salad", 1195, "food"),
    ("SAL-002", "Cobb Salad", 1595, "food"),
    ("BUR-001", "Classic Burger", 1595, "food"),
    ("BUR-002", "Bacon Cheeseburger", 1795, "food"),
    ("BUR-003", "Veggie Burger", 1495, "food"),
    ("SAN-001", "Club Sandwich", 1395, "food"),
    ("SAN-002", "Fish Tacos", 1550, "food"),
    ("ENT-001", "Ribeye 12oz", 3895, "food"),
    ("ENT-002", "Salmon", 2695, "food"),
    ("ENT-003", "Chicken Parm", 2195, "food"),
    ("ENT-004", "Pasta Primavera", 1895, "food"),
    ("ENT-005", "Brisket Plate", 2495, "food"),
    ("SID-001", "Fries", 495, "food"),
    ("SID-002", "Onion Rings", 595, "food"),
    ("DES-001", "Cheesecake", 895, "food"),
    ("DES-002", "Brownie Sundae", 995, "food"),
    ("NAB-001", "Soda", 350, "drink"),
    ("NAB-002", "Iced Tea", 350, "drink"),
    ("NAB-003", "Coffee", 325, "drink"),
    ("NAB-004", "Lemonade", 425, "drink"),
    ("BEE-001", "Draft Lager", 750, "bar"),
    ("BEE-002", "IPA", 850, "bar"),
    ("WIN-001", "House Red", 1100, "bar"),
    ("WIN-002", "House White", 1100, "bar"),
    ("COC-001", "Margarita", 1300, "bar"),
    ("COC-002", "Old Fashioned", 1450, "bar"),
]
FOOD = [m for m in MENU if m[3] == "food"]
DRINKS = [m for m in MENU if m[3] == "drink"]
BAR = [m for m in MENU if m[3] == "bar"]

VENDORS = [
    ("V01", "Sysco Foods"),
    ("V02", "US Foods"),
    ("V03", "Gordon Food Service"),
    ("V04", "Performance Foodservice"),
    ("V05", "Reinhart Foodservice"),
    ("V06", "Coca-Cola Bottling"),
    ("V07", "Southern Glazer's Wine & Spirits"),
    ("V08", "Breakthru Beverage"),
    ("V09", "Ecolab"),
    ("V10", "Cintas"),
    ("V11", "Restaurant Depot"),
    ("V12", "Local Farm Co-op"),
]
VENDOR_ITEMS = {
    "food": [
        ("Chicken breast, case", 8900),
        ("Ground beef 80/20, 10 lb", 5450),
        ("Salmon fillets, 10 lb", 12900),
        ("Romaine, case", 3800),
        ("Potatoes, 50 lb", 2450),
        ("Fryer oil, 35 lb", 4200),
        ("Cheddar, 5 lb", 2390),
        ("Burger buns, 8 dz", 2160),
    ],
    "drink": [("Syrup BIB Coke, 5 gal", 11200), ("CO2 tank", 3500), ("Lemons, case", 4100)],
    "bar": [
        ("Lager keg 1/2 bbl", 16500),
        ("IPA keg 1/6 bbl", 9800),
        ("House red, case", 9600),
        ("Tequila 1L, case", 28800),
    ],
    "supplies": [
        ("Sanitizer, 4 gal", 6400),
        ("Dish detergent", 5200),
        ("Linen service", 18750),
        ("Gloves, case", 4800),
    ],
}
VENDOR_KIND = {
    "V01": "food",
    "V02": "food",
    "V03": "food",
    "V04": "food",
    "V05": "food",
    "V06": "drink",
    "V07": "bar",
    "V08": "bar",
    "V09": "supplies",
    "V10": "supplies",
    "V11": "food",
    "V12": "food",
}

REVENUE_CENTERS = ["Dining Room", "Bar", "Patio", "Takeout", "Delivery"]


def money(cents: int) -> float:
    """Cents as a JSON number with at most two decimals (exact in repr)."""
    return round(cents / 100, 2)


def iso(dt: datetime) -> str:
    return dt.isoformat(timespec="seconds")


def make_check(rng: random.Random, loc: tuple, business_date: date, seq: int) -> dict:
    """One check (order) with items, discounts, voids, refunds, tax, tips, payments."""
    loc_id, _name, tz, _base, tax_bp, has_bar = loc
    zone = ZoneInfo(tz)
    centers = ["Dining Room", "Patio", "Takeout", "Delivery"] + (["Bar", "Bar"] if has_bar else [])
    center = rng.choice(centers)
    # Service hours 11:00-23:59, bars until 01:59 of the next calendar day.
    if center == "Bar" and rng.random() < 0.18:
        hour = rng.choice([0, 0, 1])
        day = business_date + timedelta(days=1)
    else:
        hour = rng.choices(range(11, 24), weights=[6, 10, 8, 4, 3, 4, 8, 11, 10, 7, 4, 2, 1])[0]
        day = business_date
    opened = datetime(
        day.year, day.month, day.day, hour, rng.randrange(60), rng.randrange(60), tzinfo=zone
    )
    closed = opened + timedelta(minutes=rng.randint(4, 95) if center != "Takeout" else 3)
    guests = (
        1
        if center in ("Takeout", "Delivery")
        else rng.choices([1, 2, 3, 4, 5, 6, 8], weights=[20, 38, 14, 16, 5, 5, 2])[0]
    )
    items = []
    count = max(1, guests + rng.randint(-1, 3))
    for _ in range(count):
        pool = (
            BAR
            if center == "Bar" and rng.random() < 0.6
            else (DRINKS if rng.random() < 0.25 else FOOD)
        )
        sku, name, price, _cat = rng.choice(pool)
        qty = 1 if rng.random() < 0.85 else 2
        item = {"sku": sku, "name": name, "qty": qty, "unit_price": money(price)}
        if rng.random() < 0.02:
            item["voided"] = True
            item["void_reason"] = rng.choice(["Wrong item", "Customer changed mind", "86'd"])
        items.append(item)
    live = sum(round(i["unit_price"] * 100) * i["qty"] for i in items if not i.get("voided"))
    discounts = []
    if rng.random() < 0.08 and live:
        kind = rng.choice(["Happy hour 20%", "Employee 50%", "Manager comp", "Loyalty $5"])
        amount = {
            "Happy hour 20%": live * 20 // 100,
            "Employee 50%": live // 2,
            "Manager comp": min(live, 1500),
            "Loyalty $5": min(live, 500),
        }[kind]
        discounts.append({"name": kind, "amount": money(amount)})
    disc = sum(round(d["amount"] * 100) for d in discounts)
    service = []
    if guests >= 6:
        service.append({"name": "Large party 18%", "amount": money((live - disc) * 18 // 100)})
    elif center == "Delivery":
        service.append({"name": "Delivery fee", "amount": 3.99})
    svc = sum(round(s["amount"] * 100) for s in service)
    tax = (live - disc + svc) * tax_bp // 10000
    tip = 0
    card = rng.random() < 0.82
    if card and center not in ("Takeout",):
        tip = (live - disc) * rng.choice([0, 15, 18, 18, 20, 20, 22, 25]) // 100
    total = live - disc + svc + tax
    payments = []
    if card and rng.random() < 0.1 and total > 2000:
        half = total // 2
        payments.append({"type": "credit", "amount": money(half), "tip": money(tip // 2)})
        payments.append(
            {"type": "credit", "amount": money(total - half), "tip": money(tip - tip // 2)}
        )
    else:
        payments.append(
            {"type": "credit" if card else "cash", "amount": money(total), "tip": money(tip)}
        )
    check = {
        "check_id": f"{loc_id}-{business_date:%Y%m%d}-{seq:05d}",
        "location_id": loc_id,
        "business_date": business_date.isoformat(),
        "revenue_center": center,
        "opened_at": iso(opened),
        "closed_at": iso(closed),
        "guest_count": guests,
        "status": "closed",
        "items": items,
        "discounts": discounts,
        "service_charges": service,
        "tax": money(tax),
        "tip": money(tip),
        "payments": payments,
        "refunds": [],
    }
    if rng.random() < 0.007:
        check["status"] = "voided"
        check["void_reason"] = rng.choice(["Walkout", "Test check", "Duplicate ring"])
        check["payments"] = []
        check["tip"] = 0.0
    elif rng.random() < 0.005 and live:
        amount = min(live - disc, rng.choice([500, 1200, 1595]))
        check["refunds"].append(
            {
                "amount": money(amount),
                "reason": "Food quality",
                "refunded_at": iso(closed + timedelta(minutes=20)),
            }
        )
    return check


def day_volume(rng: random.Random, base: int, day: date) -> int:
    weekday = day.weekday()
    factor = {4: 1.25, 5: 1.35, 6: 1.15, 0: 0.85}.get(weekday, 1.0)
    return max(150, int(base * factor * rng.uniform(0.9, 1.1)))


def write_gzip_json(path: Path, data: object) -> None:
    raw = json.dumps(data, separators=(",", ":")).encode()
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=9, mtime=0) as gz:
        gz.write(raw)
    path.write_bytes(buf.getvalue())


def generate_sales(out: Path, rng: random.Random) -> set[tuple[str, str]]:
    """Write the sales files; return the (business date, location id) of the files written."""
    written: set[tuple[str, str]] = set()
    sales = out / "sales"
    sales.mkdir(parents=True, exist_ok=True)
    (sales / "locations.json").write_text(
        json.dumps(
            {
                "locations": [
                    {"id": loc[0], "name": loc[1], "timezone": loc[2]} for loc in LOCATIONS
                ]
            },
            indent=1,
        )
    )
    for offset in range(DAYS):
        day = FIRST_DATE + timedelta(days=offset)
        folder = sales / day.isoformat()
        folder.mkdir(exist_ok=True)
        for loc in LOCATIONS:
            checks = [
                make_check(rng, loc, day, seq + 1) for seq in range(day_volume(rng, loc[3], day))
            ]
            path = folder / f"{loc[0]}.json.gz"
            if (day.isoformat(), loc[0]) == ("2025-06-12", "L03"):
                checks[37]["items"][0]["qty"] = "two"  # malformed content, valid JSON
            if (day.isoformat(), loc[0]) == ("2025-06-13", "L11"):
                continue  # missing file
            write_gzip_json(
                path, {"location_id": loc[0], "business_date": day.isoformat(), "checks": checks}
            )
            written.add((day.isoformat(), loc[0]))
            if (day.isoformat(), loc[0]) == ("2025-06-10", "L07"):
                data = path.read_bytes()
                path.write_bytes(data[: len(data) // 3])  # truncated: corrupt gzip
    return written


def make_invoice(rng: random.Random, number: int, vendor: tuple, credit: bool) -> dict:
    vendor_id, _name = vendor
    kind = VENDOR_KIND[vendor_id]
    inv_date = FIRST_DATE + timedelta(days=rng.randrange(DAYS))
    lines = []
    for line_no in range(1, rng.randint(1, 9) + 1):
        desc, price = rng.choice(VENDOR_ITEMS[kind])
        qty = rng.randint(1, 12) if not credit else -rng.randint(1, 3)
        lines.append(
            {
                "line_no": line_no,
                "sku": f"{vendor_id}-{sum(map(ord, desc)) % 10000:04d}",
                "description": desc,
                "qty": qty,
                "unit_price": money(price),
                "amount": money(qty * price),
            }
        )
    subtotal = sum(round(line["amount"] * 100) for line in lines)
    tax = subtotal * (0 if kind == "food" else 700) // 10000
    updated = datetime(
        inv_date.year,
        inv_date.month,
        inv_date.day,
        rng.randint(6, 22),
        rng.randrange(60),
        rng.randrange(60),
        tzinfo=ZoneInfo("UTC"),
    )
    updated += timedelta(days=rng.choice([0, 0, 0, 1, 2]))
    return {
        "vendor_id": vendor_id,
        "invoice_number": f"{'CM' if credit else 'INV'}-{vendor_id[1:]}{number:05d}",
        "document_type": "credit_memo" if credit else "invoice",
        "invoice_date": inv_date.isoformat(),
        "due_date": (inv_date + timedelta(days=rng.choice([15, 30, 30, 45]))).isoformat(),
        "location_id": rng.choice(LOCATIONS)[0],
        "currency": "USD",
        "lines": lines,
        "subtotal": money(subtotal),
        "tax": money(tax),
        "total": money(subtotal + tax),
        "updated_at": updated.isoformat().replace("+00:00", "Z"),
    }


def generate_invoices(out: Path, rng: random.Random) -> None:
    inv_dir = out / "invoices"
    inv_dir.mkdir(parents=True, exist_ok=True)
    (inv_dir / "vendors.json").write_text(
        json.dumps({"vendors": [{"id": v, "name": n} for v, n in VENDORS]}, indent=1)
    )
    invoices = []
    for number in range(1, 321):
        vendor = VENDORS[number % len(VENDORS)]
        invoices.append(make_invoice(rng, number, vendor, credit=rng.random() < 0.05))
    bad = rng.sample(range(len(invoices)), 18)
    for n, index in enumerate(bad):
        inv = invoices[index]
        if n < 8:  # does not add up
            inv["total"] = round(inv["total"] + rng.choice([1.37, -2.5, 10.0, 0.05]), 2)
        elif n < 11:  # unknown vendor
            inv["vendor_id"] = "V99"
            inv["invoice_number"] = f"X-{index:05d}"
        elif n < 14:  # negative quantity on a plain invoice
            line = inv["lines"][0]
            inv["document_type"] = "invoice"
            line["qty"] = -abs(line["qty"]) or -1
            line["amount"] = round(line["qty"] * line["unit_price"], 2)
            sub = sum(round(x["amount"] * 100) for x in inv["lines"])
            inv["subtotal"] = money(sub)
            inv["total"] = money(sub + round(inv["tax"] * 100))
        elif n < 16:  # missing invoice number
            inv["invoice_number"] = ""
        else:  # impossible dates
            inv["due_date"] = "2025-05-01"
    invoices.sort(key=lambda i: (i["updated_at"], i["vendor_id"], i["invoice_number"]))
    json_part = [i for i in invoices if i["vendor_id"] != "V12"]
    csv_part = [i for i in invoices if i["vendor_id"] == "V12"]
    (inv_dir / "invoices.json").write_text(json.dumps({"invoices": json_part}, indent=1))
    fields = [
        "vendor_id",
        "invoice_number",
        "document_type",
        "invoice_date",
        "due_date",
        "location_id",
        "currency",
        "subtotal",
        "tax",
        "total",
        "updated_at",
        "line_no",
        "sku",
        "description",
        "qty",
        "unit_price",
        "amount",
    ]
    with (inv_dir / "invoices_V12.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        for inv in csv_part:
            head = {k: inv[k] for k in fields[:11]}
            for line in inv["lines"]:
                writer.writerow({**head, **line})


FIRST_NAMES = [
    "Maria",
    "Jose",
    "Luis",
    "Ana",
    "Carlos",
    "Sofia",
    "Daniel",
    "Emily",
    "Kevin",
    "Jessica",
    "Miguel",
    "Ashley",
    "David",
    "Brianna",
    "Juan",
    "Hannah",
    "Marcus",
    "Priya",
    "Tyler",
    "Grace",
    "Andre",
    "Lucia",
    "Omar",
    "Chloe",
    "Ethan",
    "Rosa",
    "Jamal",
    "Mei",
    "Diego",
    "Natalie",
    "Samuel",
    "Fatima",
    "Brandon",
    "Elena",
]
LAST_NAMES = [
    "Garcia",
    "Hernandez",
    "Nguyen",
    "Smith",
    "Johnson",
    "Lopez",
    "Martinez",
    "Kim",
    "Williams",
    "Brown",
    "Davis",
    "Rodriguez",
    "Chen",
    "Patel",
    "Wilson",
    "Ramirez",
    "Torres",
    "Flores",
    "Jackson",
    "Rivera",
    "Lee",
    "Gomez",
    "Walker",
    "Diaz",
    "Reyes",
    "Morales",
    "Young",
    "Cruz",
    "Ortiz",
    "Baker",
]
ROLES = [
    # role, weight, hourly rate range in cents
    ("Server", 30, (1650, 1800)),
    ("Bartender", 10, (1700, 1900)),
    ("Line Cook", 22, (1850, 2450)),
    ("Prep Cook", 10, (1750, 2100)),
    ("Dishwasher", 10, (1650, 1750)),
    ("Host", 8, (1650, 1700)),
    ("Busser", 6, (1650, 1700)),
    ("Shift Lead", 4, (2400, 3200)),
]


def make_roster(rng: random.Random, loc: tuple) -> list[dict]:
    """The location's hourly employees: stable ids, names, roles and rates."""
    size = 45 + loc[3] // 40 + rng.randint(0, 10)
    roster = []
    for n in range(1, size + 1):
        role, _w, (low, high) = rng.choices(ROLES, weights=[r[1] for r in ROLES])[0]
        roster.append(
            {
                "employee_id": f"{loc[0]}-E{n:03d}",
                "employee_name": f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}",
                "job": role,
                "hourly_rate": money(rng.randrange(low, high + 1, 5)),
            }
        )
    return roster


def _meal(rng: random.Random, due_minute: int) -> tuple[int | None, int]:
    """(worked minute the meal starts, its length) for a meal due by ``due_minute``; None
    is a meal not taken. Mostly compliant, some exactly on the limits, some late or short."""
    roll = rng.random()
    if roll < 0.06:
        return None, 0
    if roll < 0.14:
        return due_minute + rng.randint(1, 75), rng.randint(30, 45)  # late
    if roll < 0.20:
        return due_minute - rng.randint(30, 120), rng.randint(15, 29)  # short
    if roll < 0.24:
        return due_minute, 30  # on the limits
    return due_minute - rng.randint(20, 130), rng.randint(30, 45)


def make_shift(
    rng: random.Random,
    employee: dict,
    day: date,
    zone: ZoneInfo,
    shift_id: str,
    start_minute: int,
    length: int,
) -> dict:
    """One shift: punches in local time, paid rest breaks, unpaid meals, waiver flags.

    ``length`` is minutes worked (meals excluded); meals are placed in worked time.
    """
    meals: list[tuple[int, int]] = []  # (worked minute, minutes)
    first_waiver = second_waiver = False
    if length > 300:
        if length <= 360 and rng.random() < 0.45:
            first_waiver = True
        if not first_waiver:
            start, mins = _meal(rng, 300)
            if start is not None:
                meals.append((min(start, length - 15), mins))
    if length > 600:
        if length <= 720 and not meals and rng.random() < 0.3:
            first_waiver = True  # signed, but not valid on a shift this long
        if length <= 720 and rng.random() < 0.3:
            second_waiver = True
        else:
            start, mins = _meal(rng, 600)
            if start is not None and (not meals or start > meals[0][0] + meals[0][1] + 60):
                meals.append((min(start, length - 15), mins))
    elif length <= 300 and rng.random() < 0.05:
        first_waiver = True  # on file, irrelevant on a short shift
    clock_in = datetime(day.year, day.month, day.day, 0, 0, tzinfo=zone) + timedelta(
        minutes=start_minute
    )
    breaks = []
    unpaid = 0
    for worked, mins in meals:
        begin = clock_in + timedelta(minutes=worked + unpaid)
        breaks.append(
            {"kind": "meal", "start": iso(begin), "end": iso(begin + timedelta(minutes=mins))}
        )
        unpaid += mins
    for hour in range(4, length // 60, 4):  # paid 10-minute rest breaks: not meal periods
        worked = hour * 60 - 90
        if all(abs(worked - m) > 45 for m, _ in meals):
            offset = sum(mins for m, mins in meals if m < worked)
            begin = clock_in + timedelta(minutes=worked + offset)
            breaks.append(
                {"kind": "rest", "start": iso(begin), "end": iso(begin + timedelta(minutes=10))}
            )
    breaks.sort(key=lambda b: b["start"])
    return {
        "shift_id": shift_id,
        "business_date": day.isoformat(),
        **employee,
        "clock_in": iso(clock_in),
        "clock_out": iso(clock_in + timedelta(minutes=length + unpaid)),
        "breaks": breaks,
        "first_meal_waiver": first_waiver,
        "second_meal_waiver": second_waiver,
    }


def make_shifts(rng: random.Random, loc: tuple, roster: list[dict], day: date) -> list[dict]:
    """20 to 60 shifts of one location-day; some employees work a split shift."""
    zone = ZoneInfo(loc[2])
    factor = {4: 1.2, 5: 1.3, 6: 1.1, 0: 0.85}.get(day.weekday(), 1.0)
    count = min(60, max(20, int((14 + loc[3] / 40) * factor * rng.uniform(0.85, 1.1))))
    shifts: list[dict] = []
    seq = 0
    for employee in rng.sample(roster, min(len(roster), count)):
        if len(shifts) >= count:
            break
        seq += 1
        base = f"{loc[0]}-{day:%Y%m%d}-{seq:03d}"
        if rng.random() < 0.1 and count - len(shifts) >= 2:  # split shift: lunch and dinner
            lunch = rng.randint(210, 300)
            shifts.append(
                make_shift(rng, employee, day, zone, f"{base}a", rng.choice([600, 630, 660]), lunch)
            )
            shifts.append(
                make_shift(
                    rng,
                    employee,
                    day,
                    zone,
                    f"{base}b",
                    rng.choice([990, 1020]),
                    rng.randint(240, 330),
                )
            )
            continue
        length = rng.choices(
            [
                rng.randint(180, 299),
                300,
                rng.randint(301, 360),
                360,
                rng.randint(361, 600),
                rng.randint(601, 720),
                rng.randint(721, 780),
            ],
            weights=[26, 3, 14, 3, 40, 10, 4],
        )[0]
        start = rng.choice([360, 420, 540, 600, 630, 660, 900, 960, 990, 1020])
        start = min(start, 1500 - length)  # out by about 01:00 next morning
        shifts.append(make_shift(rng, employee, day, zone, base, start, length))
    return shifts


def generate_timeclock(
    out: Path, rng: random.Random
) -> tuple[dict[str, list[dict]], dict[tuple[str, str], list[dict]]]:
    """Write the timeclock files; return the rosters by location id and the shifts of each
    (business date, location id) whose file was written (truncated or malformed included)."""
    written: dict[tuple[str, str], list[dict]] = {}
    clock = out / "timeclock"
    clock.mkdir(parents=True, exist_ok=True)
    (clock / "locations.json").write_text(
        json.dumps(
            {
                "locations": [
                    {"id": loc[0], "name": loc[1], "timezone": loc[2]} for loc in LOCATIONS
                ]
            },
            indent=1,
        )
    )
    rosters = {loc[0]: make_roster(rng, loc) for loc in LOCATIONS}
    for offset in range(DAYS):
        day = FIRST_DATE + timedelta(days=offset)
        folder = clock / day.isoformat()
        folder.mkdir(exist_ok=True)
        for loc in LOCATIONS:
            shifts = make_shifts(rng, loc, rosters[loc[0]], day)
            key = (day.isoformat(), loc[0])
            path = folder / f"{loc[0]}.json"
            if key == ("2025-06-14", "L04"):
                continue  # missing file
            if key == ("2025-06-09", "L10"):
                shifts[11]["clock_out"] = shifts[11]["clock_out"].replace("T", "T2", 1)
            head = json.dumps({"location_id": loc[0], "business_date": day.isoformat()})
            text = (
                head[:-1]
                + ', "shifts": [\n'  # one shift a line: small, and diffable
                + ",\n".join(json.dumps(shift) for shift in shifts)
                + "\n]}"
            )
            if key == ("2025-06-05", "L08"):
                text = text[: len(text) // 2]  # truncated: not valid JSON
            path.write_text(text + "\n")
            written[key] = shifts
    return rosters, written


AS_OF = date(2025, 6, 15)  # the statuses below are as of the last sample date
ISSUERS = [
    "ServSafe",
    "StateFoodSafety",
    "eFoodHandlers",
    "Premier Food Safety",
    "Food Handler Solutions",
]
HIRE_YEARS = [  # year, weight: mostly 2016 to 2025, recent years weigh more (turnover)
    (2012, 1),
    (2013, 1),
    (2014, 2),
    (2015, 2),
    (2016, 3),
    (2017, 4),
    (2018, 5),
    (2019, 6),
    (2020, 4),
    (2021, 7),
    (2022, 10),
    (2023, 13),
    (2024, 16),
    (2025, 9),
]
LAST_REGULAR_HIRE = date(2025, 5, 10)  # "overdue" hires are more than 30 days before AS_OF
CARD_STATUS_COUNTS = {"expiring": 15, "expired": 15, "overdue": 12, "missing": 8}
BAD_CERTIFICATES = [
    "html",
    "html",
    "empty",
    "empty",
    "truncated",
    "truncated",
    "missing",
    "missing",
]
BAD_EMAILS = ["empty", "empty", "invalid", "invalid", "refused", "refused"]
HTML_ERROR = b"<html><body><h1>503 Service Unavailable</h1></body></html>\n"

# The group's tip pools: points per job. Managers and supervisors (Shift Lead) never
# share (California Labor Code 351); L09 deliberately has no policy.
TIP_POLICIES = {
    "L01": {"Server": "10", "Bartender": "10", "Busser": "5", "Host": "3"},
    "L02": {"Server": "10", "Bartender": "12", "Busser": "4", "Host": "2"},
    "L03": {
        "Server": "10",
        "Bartender": "8",
        "Busser": "4",
        "Host": "3",
        "Line Cook": "2",
        "Prep Cook": "2",
        "Dishwasher": "1",
    },
    "L04": {"Server": "10", "Bartender": "14", "Busser": "5", "Host": "3"},
    "L05": {
        "Server": "10",
        "Bartender": "8",
        "Busser": "5",
        "Host": "3",
        "Line Cook": "2",
        "Prep Cook": "2",
        "Dishwasher": "1",
    },
    "L06": {
        "Server": "10",
        "Bartender": "12",
        "Busser": "5",
        "Host": "3",
        "Line Cook": "2",
        "Prep Cook": "1.5",
    },
    "L07": {
        "Server": "10",
        "Bartender": "12",
        "Busser": "4",
        "Line Cook": "2",
        "Prep Cook": "2",
        "Dishwasher": "1",
    },
    "L08": {"Server": "10", "Bartender": "8", "Busser": "5", "Host": "2.5"},
    "L10": {"Server": "10", "Bartender": "14", "Busser": "5", "Host": "3"},
    "L11": {"Server": "8", "Bartender": "15", "Busser": "4", "Line Cook": "2", "Dishwasher": "1"},
    "L12": {
        "Server": "10",
        "Bartender": "8",
        "Busser": "6",
        "Host": "4",
        "Line Cook": "2",
        "Prep Cook": "2",
        "Dishwasher": "2",
    },
}
CASH_TIP_JOBS = ("Server", "Bartender")


def plus_years(day: date, years: int) -> date:
    return day.replace(year=day.year + years)  # no card is issued on February 29


def random_day(rng: random.Random, first: date, last: date) -> date:
    day = first + timedelta(days=rng.randint(0, (last - first).days))
    return day - timedelta(days=1) if (day.month, day.day) == (2, 29) else day


def make_card(rng: random.Random, employee: dict, status: str, numbers: set[str]) -> dict:
    """A food handler card of the given status as of ``AS_OF``; may move the hire date
    back so that the card is issued after it (within 30 days of hire for a first card)."""
    if status == "expiring":  # expires 2025-06-16 .. 2025-07-15
        issued = random_day(rng, date(2022, 6, 16), date(2022, 7, 15))
        if date.fromisoformat(employee["hire_date"]) > plus_years(issued, -3):  # a first card
            employee["hire_date"] = (issued - timedelta(days=rng.randint(0, 30))).isoformat()
    elif status == "expired":  # expires before AS_OF; may be from an earlier job
        issued = random_day(rng, date(2021, 1, 1), date(2022, 6, 14))
    else:  # valid: first card within 30 days of hire, renewed before it lapses
        issued = date.fromisoformat(employee["hire_date"]) + timedelta(days=rng.randint(0, 30))
        while plus_years(issued, 3) <= AS_OF + timedelta(days=30):
            issued = plus_years(issued, 3) - timedelta(days=rng.randint(0, 45))
        if issued > AS_OF:
            issued = AS_OF - timedelta(days=rng.randint(0, 10))
        if (issued.month, issued.day) == (2, 29):
            issued -= timedelta(days=1)
    number = f"CFH-{rng.randint(1_000_000, 9_999_999)}"
    while number in numbers:
        number = f"CFH-{rng.randint(1_000_000, 9_999_999)}"
    numbers.add(number)
    return {
        "card_number": number,
        "issuer": rng.choice(ISSUERS),
        "issued_on": issued.isoformat(),
        "expires_on": plus_years(issued, 3).isoformat(),
        "certificate_url": f"certificates/{number}.pdf",
    }


def certificate_pdf(name: str, card: dict) -> bytes:
    """A one-page certificate, byte-identical from run to run (fixed dates and metadata)."""
    try:
        from fpdf import FPDF
    except ImportError as exc:  # pragma: no cover
        raise SystemExit("the certificates need fpdf2: pip install fpdf2==2.8.9") from exc
    pdf = FPDF(format="letter")
    pdf.set_compression(True)
    pdf.set_creation_date(datetime(2025, 6, 1, tzinfo=UTC))
    pdf.set_producer("scripts/generate_sample_data.py")
    pdf.set_creator("scripts/generate_sample_data.py")
    pdf.set_title("California Food Handler Card")
    pdf.set_author(card["issuer"])
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 20)
    pdf.cell(0, 16, "California Food Handler Card", new_x="LMARGIN", new_y="NEXT", align="C")
    pdf.ln(6)
    pdf.set_font("Helvetica", "", 13)
    for label, value in (
        ("Name", name),
        ("Card number", card["card_number"]),
        ("Issuer", card["issuer"]),
        ("Issued on", card["issued_on"]),
        ("Expires on", card["expires_on"]),
    ):
        pdf.cell(0, 9, f"{label}: {value}", new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())


def generate_roster(
    out: Path,
    rng: random.Random,
    rosters: dict[str, list[dict]],
    shifts: dict[tuple[str, str], list[dict]],
) -> dict:
    """Write roster/employees.json and the certificates; return the bad records by kind."""
    folder = out / "roster"
    certificates = folder / "certificates"
    certificates.mkdir(parents=True, exist_ok=True)
    for stale in certificates.glob("*.pdf"):  # the missing certificates must be missing
        stale.unlink()
    employees = []
    for loc in LOCATIONS:
        for person in rosters[loc[0]]:
            year = rng.choices([y for y, _ in HIRE_YEARS], weights=[w for _, w in HIRE_YEARS])[0]
            hired = random_day(rng, date(year, 1, 1), min(date(year, 12, 31), LAST_REGULAR_HIRE))
            first, last = person["employee_name"].lower().split(" ", 1)
            tag = person["employee_id"].replace("-", "").lower()
            employees.append(
                {
                    "employee_id": person["employee_id"],
                    "name": person["employee_name"],
                    "location_id": loc[0],
                    "job": person["job"],
                    "handles_food": person["job"] != "Host",
                    "hire_date": hired.isoformat(),
                    "email": f"{first}.{last}.{tag}@example.com",
                    "food_handler": None,
                }
            )
    handlers = [e for e in employees if e["handles_food"]]
    status = {e["employee_id"]: "valid" for e in handlers}
    chosen = rng.sample(range(len(handlers)), sum(CARD_STATUS_COUNTS.values()))
    for kind, count in CARD_STATUS_COUNTS.items():
        for index in chosen[:count]:
            status[handlers[index]["employee_id"]] = kind
        chosen = chosen[count:]
    numbers: set[str] = set()
    for employee in handlers:
        kind = status[employee["employee_id"]]
        if kind == "missing":  # a new hire, still within the 30-day grace period
            hired = random_day(rng, date(2025, 5, 20), date(2025, 6, 14))
            employee["hire_date"] = hired.isoformat()
        elif kind != "overdue":
            employee["food_handler"] = make_card(rng, employee, kind, numbers)

    # Bad emails: on tipped employees (Server, Bartender) with a valid card who worked, in
    # locations with a tip policy, one location each.
    worked = {s["employee_id"] for day in shifts.values() for s in day}
    bad: dict = {"emails": {}, "certificates": {}}
    for kind, loc_id in zip(
        BAD_EMAILS, rng.sample(sorted(TIP_POLICIES), len(BAD_EMAILS)), strict=True
    ):
        employee = rng.choice(
            [
                e
                for e in employees
                if e["location_id"] == loc_id
                and e["job"] in CASH_TIP_JOBS
                and e["employee_id"] in worked
                and status[e["employee_id"]] == "valid"
            ]
        )
        first, last = employee["name"].lower().split(" ", 1)
        employee["email"] = {
            "empty": "",
            "invalid": rng.choice([f"{first}.{last}@", f"{first} {last}@example"]),
            "refused": f"{first}.{last}@refused.example.com",
        }[kind]
        bad["emails"][employee["employee_id"]] = kind
    # Bad certificates: on otherwise valid cards, one location each.
    for kind, loc_id in zip(
        BAD_CERTIFICATES,
        rng.sample([loc[0] for loc in LOCATIONS], len(BAD_CERTIFICATES)),
        strict=True,
    ):
        employee = rng.choice(
            [
                e
                for e in handlers
                if e["location_id"] == loc_id
                and status[e["employee_id"]] == "valid"
                and e["employee_id"] not in bad["emails"]
            ]
        )
        bad["certificates"][employee["employee_id"]] = kind

    for employee in handlers:
        card = employee["food_handler"]
        if card is None:
            continue
        kind = bad["certificates"].get(employee["employee_id"])
        path = folder / card["certificate_url"]
        if kind == "missing":
            continue
        content = certificate_pdf(employee["name"], card)
        if kind == "html":
            content = HTML_ERROR
        elif kind == "empty":
            content = b""
        elif kind == "truncated":
            content = content[: len(content) // 3]
        path.write_bytes(content)
    text = (
        '{"employees": [\n'  # one employee a line: small, and diffable
        + ",\n".join(json.dumps(employee) for employee in employees)
        + "\n]}\n"
    )
    (folder / "employees.json").write_text(text)
    bad["statuses"] = status
    return bad


def generate_tips(
    out: Path,
    rng: random.Random,
    sales_written: set[tuple[str, str]],
    shifts: dict[tuple[str, str], list[dict]],
) -> None:
    """Write tips/policies.json and the cash tips declared for each location-day that has
    both a sales and a timeclock file."""
    folder = out / "tips"
    folder.mkdir(parents=True, exist_ok=True)
    policies = {
        "note": "Tip pool points per job, by location. Managers and supervisors never share "
        "(California Labor Code 351). Edit and commit this file to change a policy.",
        "pay_period": {"kind": "weekly", "first_day": "monday"},
        "policies": {loc_id: {"jobs": jobs} for loc_id, jobs in TIP_POLICIES.items()},
    }
    (folder / "policies.json").write_text(json.dumps(policies, indent=1, sort_keys=True) + "\n")
    for key in sorted(shifts):
        if key not in sales_written:
            continue
        day, loc_id = key
        declaring = sorted(
            {s["employee_id"]: s["job"] for s in shifts[key] if s["job"] in CASH_TIP_JOBS}.items()
        )
        rows = []
        for employee_id, job in declaring:
            if rng.random() < 0.2:
                cents = 0
            elif job == "Bartender" and rng.random() < 0.15:
                cents = rng.randint(241, 400) * 25  # a busy bar night: $60.25 to $100
            else:
                cents = rng.randint(1, 240) * 25  # $0.25 to $60
            rows.append({"employee_id": employee_id, "amount": f"{cents // 100}.{cents % 100:02d}"})
        head = json.dumps({"location_id": loc_id, "business_date": day})
        text = (
            head[:-1]
            + ', "declarations": [\n'  # one declaration a line
            + ",\n".join(json.dumps(row) for row in rows)
            + "\n]}\n"
        )
        (out / "sales" / day / f"{loc_id}.cash-tips.json").write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parent.parent / "sample_data"
    )
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args()
    sales_written = generate_sales(args.out, random.Random(args.seed))
    generate_invoices(args.out, random.Random(args.seed + 1))
    rosters, shifts = generate_timeclock(args.out, random.Random(args.seed + 2))
    generate_roster(args.out, random.Random(args.seed + 3), rosters, shifts)
    generate_tips(args.out, random.Random(args.seed + 4), sales_written, shifts)


if __name__ == "__main__":
    main()
