#!/usr/bin/env python
"""Generate the committed sample data set under ``sample_data/`` (deterministic, seeded).

Why a generator: the data must be realistic (volumes, voids, refunds, late-night
bar checks, credit memos) and reproducible, and the deliberately bad records must
be documented in one place. Running it again with the same seed rewrites
byte-identical files (gzip headers carry no timestamp).

Layout written::

    sample_data/sales/locations.json
    sample_data/sales/<business_date>/<location_id>.json.gz   checks of one location-day
    sample_data/invoices/vendors.json
    sample_data/invoices/invoices.json                        most vendors, JSON
    sample_data/invoices/invoices_V12.csv                     one vendor exports CSV
    sample_data/timeclock/locations.json
    sample_data/timeclock/<business_date>/<location_id>.json  shifts of one location-day

Deliberately bad records (also listed in ``sample_data/README.md``):

* sales ``2025-06-10/L07.json.gz`` is a truncated (corrupt) gzip file;
* sales ``2025-06-12/L03.json.gz`` has a check whose item quantity is not a number;
* sales ``2025-06-13/L11.json.gz`` is missing;
* timeclock ``2025-06-05/L08.json`` is truncated (not valid JSON);
* timeclock ``2025-06-09/L10.json`` has a shift whose clock-out time is malformed;
* timeclock ``2025-06-14/L04.json`` is missing;
* invoices that do not add up, from an unknown vendor, with a negative quantity
  that is not a credit memo, without an invoice number, or with impossible dates.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import json
import random
from datetime import date, datetime, timedelta
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
    ("APP-001", "Wings", 1395, "food"), ("APP-002", "Nachos", 1250, "food"),
    ("APP-003", "Calamari", 1495, "food"), ("APP-004", "Soup of the Day", 795, "food"),
    ("SAL-001", "Caesar Salad", 1195, "food"), ("SAL-002", "Cobb Salad", 1595, "food"),
    ("BUR-001", "Classic Burger", 1595, "food"), ("BUR-002", "Bacon Cheeseburger", 1795, "food"),
    ("BUR-003", "Veggie Burger", 1495, "food"), ("SAN-001", "Club Sandwich", 1395, "food"),
    ("SAN-002", "Fish Tacos", 1550, "food"), ("ENT-001", "Ribeye 12oz", 3895, "food"),
    ("ENT-002", "Salmon", 2695, "food"), ("ENT-003", "Chicken Parm", 2195, "food"),
    ("ENT-004", "Pasta Primavera", 1895, "food"), ("ENT-005", "Brisket Plate", 2495, "food"),
    ("SID-001", "Fries", 495, "food"), ("SID-002", "Onion Rings", 595, "food"),
    ("DES-001", "Cheesecake", 895, "food"), ("DES-002", "Brownie Sundae", 995, "food"),
    ("NAB-001", "Soda", 350, "drink"), ("NAB-002", "Iced Tea", 350, "drink"),
    ("NAB-003", "Coffee", 325, "drink"), ("NAB-004", "Lemonade", 425, "drink"),
    ("BEE-001", "Draft Lager", 750, "bar"), ("BEE-002", "IPA", 850, "bar"),
    ("WIN-001", "House Red", 1100, "bar"), ("WIN-002", "House White", 1100, "bar"),
    ("COC-001", "Margarita", 1300, "bar"), ("COC-002", "Old Fashioned", 1450, "bar"),
]
FOOD = [m for m in MENU if m[3] == "food"]
DRINKS = [m for m in MENU if m[3] == "drink"]
BAR = [m for m in MENU if m[3] == "bar"]

VENDORS = [
    ("V01", "Sysco Foods"), ("V02", "US Foods"), ("V03", "Gordon Food Service"),
    ("V04", "Performance Foodservice"), ("V05", "Reinhart Foodservice"),
    ("V06", "Coca-Cola Bottling"), ("V07", "Southern Glazer's Wine & Spirits"),
    ("V08", "Breakthru Beverage"), ("V09", "Ecolab"), ("V10", "Cintas"),
    ("V11", "Restaurant Depot"), ("V12", "Local Farm Co-op"),
]
VENDOR_ITEMS = {
    "food": [("Chicken breast, case", 8900), ("Ground beef 80/20, 10 lb", 5450),
             ("Salmon fillets, 10 lb", 12900), ("Romaine, case", 3800),
             ("Potatoes, 50 lb", 2450), ("Fryer oil, 35 lb", 4200),
             ("Cheddar, 5 lb", 2390), ("Burger buns, 8 dz", 2160)],
    "drink": [("Syrup BIB Coke, 5 gal", 11200), ("CO2 tank", 3500), ("Lemons, case", 4100)],
    "bar": [("Lager keg 1/2 bbl", 16500), ("IPA keg 1/6 bbl", 9800),
            ("House red, case", 9600), ("Tequila 1L, case", 28800)],
    "supplies": [("Sanitizer, 4 gal", 6400), ("Dish detergent", 5200),
                 ("Linen service", 18750), ("Gloves, case", 4800)],
}
VENDOR_KIND = {"V01": "food", "V02": "food", "V03": "food", "V04": "food", "V05": "food",
               "V06": "drink", "V07": "bar", "V08": "bar", "V09": "supplies",
               "V10": "supplies", "V11": "food", "V12": "food"}

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
    opened = datetime(day.year, day.month, day.day, hour, rng.randrange(60), rng.randrange(60),
                      tzinfo=zone)
    closed = opened + timedelta(minutes=rng.randint(4, 95) if center != "Takeout" else 3)
    guests = 1 if center in ("Takeout", "Delivery") else rng.choices(
        [1, 2, 3, 4, 5, 6, 8], weights=[20, 38, 14, 16, 5, 5, 2])[0]
    items = []
    count = max(1, guests + rng.randint(-1, 3))
    for _ in range(count):
        pool = BAR if center == "Bar" and rng.random() < 0.6 else (
            DRINKS if rng.random() < 0.25 else FOOD)
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
        amount = {"Happy hour 20%": live * 20 // 100, "Employee 50%": live // 2,
                  "Manager comp": min(live, 1500), "Loyalty $5": min(live, 500)}[kind]
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
        payments.append({"type": "credit", "amount": money(total - half),
                         "tip": money(tip - tip // 2)})
    else:
        payments.append({"type": "credit" if card else "cash", "amount": money(total),
                         "tip": money(tip)})
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
        check["refunds"].append({"amount": money(amount), "reason": "Food quality",
                                 "refunded_at": iso(closed + timedelta(minutes=20))})
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


def generate_sales(out: Path, rng: random.Random) -> None:
    sales = out / "sales"
    sales.mkdir(parents=True, exist_ok=True)
    (sales / "locations.json").write_text(json.dumps({"locations": [
        {"id": loc[0], "name": loc[1], "timezone": loc[2]} for loc in LOCATIONS]}, indent=1))
    for offset in range(DAYS):
        day = FIRST_DATE + timedelta(days=offset)
        folder = sales / day.isoformat()
        folder.mkdir(exist_ok=True)
        for loc in LOCATIONS:
            checks = [make_check(rng, loc, day, seq + 1)
                      for seq in range(day_volume(rng, loc[3], day))]
            path = folder / f"{loc[0]}.json.gz"
            if (day.isoformat(), loc[0]) == ("2025-06-12", "L03"):
                checks[37]["items"][0]["qty"] = "two"  # malformed content, valid JSON
            if (day.isoformat(), loc[0]) == ("2025-06-13", "L11"):
                continue  # missing file
            write_gzip_json(path, {"location_id": loc[0], "business_date": day.isoformat(),
                                   "checks": checks})
            if (day.isoformat(), loc[0]) == ("2025-06-10", "L07"):
                data = path.read_bytes()
                path.write_bytes(data[: len(data) // 3])  # truncated: corrupt gzip


def make_invoice(rng: random.Random, number: int, vendor: tuple, credit: bool) -> dict:
    vendor_id, _name = vendor
    kind = VENDOR_KIND[vendor_id]
    inv_date = FIRST_DATE + timedelta(days=rng.randrange(DAYS))
    lines = []
    for line_no in range(1, rng.randint(1, 9) + 1):
        desc, price = rng.choice(VENDOR_ITEMS[kind])
        qty = rng.randint(1, 12) if not credit else -rng.randint(1, 3)
        lines.append({"line_no": line_no, "sku": f"{vendor_id}-{sum(map(ord, desc)) % 10000:04d}",
                      "description": desc, "qty": qty, "unit_price": money(price),
                      "amount": money(qty * price)})
    subtotal = sum(round(line["amount"] * 100) for line in lines)
    tax = subtotal * (0 if kind == "food" else 700) // 10000
    updated = datetime(inv_date.year, inv_date.month, inv_date.day, rng.randint(6, 22),
                       rng.randrange(60), rng.randrange(60), tzinfo=ZoneInfo("UTC"))
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
    (inv_dir / "vendors.json").write_text(json.dumps(
        {"vendors": [{"id": v, "name": n} for v, n in VENDORS]}, indent=1))
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
    fields = ["vendor_id", "invoice_number", "document_type", "invoice_date", "due_date",
              "location_id", "currency", "subtotal", "tax", "total", "updated_at",
              "line_no", "sku", "description", "qty", "unit_price", "amount"]
    with (inv_dir / "invoices_V12.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        for inv in csv_part:
            head = {k: inv[k] for k in fields[:11]}
            for line in inv["lines"]:
                writer.writerow({**head, **line})


FIRST_NAMES = ["Maria", "Jose", "Luis", "Ana", "Carlos", "Sofia", "Daniel", "Emily", "Kevin",
               "Jessica", "Miguel", "Ashley", "David", "Brianna", "Juan", "Hannah", "Marcus",
               "Priya", "Tyler", "Grace", "Andre", "Lucia", "Omar", "Chloe", "Ethan", "Rosa",
               "Jamal", "Mei", "Diego", "Natalie", "Samuel", "Fatima", "Brandon", "Elena"]
LAST_NAMES = ["Garcia", "Hernandez", "Nguyen", "Smith", "Johnson", "Lopez", "Martinez", "Kim",
              "Williams", "Brown", "Davis", "Rodriguez", "Chen", "Patel", "Wilson", "Ramirez",
              "Torres", "Flores", "Jackson", "Rivera", "Lee", "Gomez", "Walker", "Diaz",
              "Reyes", "Morales", "Young", "Cruz", "Ortiz", "Baker"]
ROLES = [
    # role, weight, hourly rate range in cents
    ("Server", 30, (1650, 1800)), ("Bartender", 10, (1700, 1900)),
    ("Line Cook", 22, (1850, 2450)), ("Prep Cook", 10, (1750, 2100)),
    ("Dishwasher", 10, (1650, 1750)), ("Host", 8, (1650, 1700)),
    ("Busser", 6, (1650, 1700)), ("Shift Lead", 4, (2400, 3200)),
]


def make_roster(rng: random.Random, loc: tuple) -> list[dict]:
    """The location's hourly employees: stable ids, names, roles and rates."""
    size = 45 + loc[3] // 40 + rng.randint(0, 10)
    roster = []
    for n in range(1, size + 1):
        role, _w, (low, high) = rng.choices(ROLES, weights=[r[1] for r in ROLES])[0]
        roster.append({"employee_id": f"{loc[0]}-E{n:03d}",
                       "employee_name": f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}",
                       "job": role, "hourly_rate": money(rng.randrange(low, high + 1, 5))})
    return roster


def _meal(rng: random.Random, due_minute: int) -> tuple[int | None, int]:
    """(worked minute the meal starts, its length) for a meal due by ``due_minute``; None
    is a meal not taken. Mostly compliant, some exactly on the limits, some late or short."""
    roll = rng.random()
    if roll < 0.06:
        return None, 0
    if roll < 0.14:
        return due_minute + rng.randint(1, 75), rng.randint(30, 45)       # late
    if roll < 0.20:
        return due_minute - rng.randint(30, 120), rng.randint(15, 29)    # short
    if roll < 0.24:
        return due_minute, 30                                             # on the limits
    return due_minute - rng.randint(20, 130), rng.randint(30, 45)


def make_shift(rng: random.Random, employee: dict, day: date, zone: ZoneInfo, shift_id: str,
               start_minute: int, length: int) -> dict:
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
        minutes=start_minute)
    breaks = []
    unpaid = 0
    for worked, mins in meals:
        begin = clock_in + timedelta(minutes=worked + unpaid)
        breaks.append({"kind": "meal", "start": iso(begin), "end": iso(begin + timedelta(
            minutes=mins))})
        unpaid += mins
    for hour in range(4, length // 60, 4):  # paid 10-minute rest breaks: not meal periods
        worked = hour * 60 - 90
        if all(abs(worked - m) > 45 for m, _ in meals):
            offset = sum(mins for m, mins in meals if m < worked)
            begin = clock_in + timedelta(minutes=worked + offset)
            breaks.append({"kind": "rest", "start": iso(begin),
                           "end": iso(begin + timedelta(minutes=10))})
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
            shifts.append(make_shift(rng, employee, day, zone, f"{base}a",
                                     rng.choice([600, 630, 660]), lunch))
            shifts.append(make_shift(rng, employee, day, zone, f"{base}b",
                                     rng.choice([990, 1020]), rng.randint(240, 330)))
            continue
        length = rng.choices(
            [rng.randint(180, 299), 300, rng.randint(301, 360), 360, rng.randint(361, 600),
             rng.randint(601, 720), rng.randint(721, 780)],
            weights=[26, 3, 14, 3, 40, 10, 4])[0]
        start = rng.choice([360, 420, 540, 600, 630, 660, 900, 960, 990, 1020])
        start = min(start, 1500 - length)  # out by about 01:00 next morning
        shifts.append(make_shift(rng, employee, day, zone, base, start, length))
    return shifts


def generate_timeclock(out: Path, rng: random.Random) -> None:
    clock = out / "timeclock"
    clock.mkdir(parents=True, exist_ok=True)
    (clock / "locations.json").write_text(json.dumps({"locations": [
        {"id": loc[0], "name": loc[1], "timezone": loc[2]} for loc in LOCATIONS]}, indent=1))
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
            text = (head[:-1] + ', "shifts": [\n'  # one shift a line: small, and diffable
                    + ",\n".join(json.dumps(shift) for shift in shifts) + "\n]}")
            if key == ("2025-06-05", "L08"):
                text = text[: len(text) // 2]  # truncated: not valid JSON
            path.write_text(text + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).resolve().parent.parent / "sample_data")
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args()
    generate_sales(args.out, random.Random(args.seed))
    generate_invoices(args.out, random.Random(args.seed + 1))
    generate_timeclock(args.out, random.Random(args.seed + 2))


if __name__ == "__main__":
    main()
