"""`connector demo`: the whole flow with nothing to set up.

It writes a small shop database (SQLite) and a config next to it, starts the sandbox API
in-process, runs a pass of every stream, changes a few rows, runs again, and prints what was
read, sent and skipped each time, and what the sandbox received.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections import Counter
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from rich.console import Console
from rich.table import Table

from connector import config, report, session
from connector.sandbox import Sandbox
from connector.sync import Report

API_KEY = "demo-key"

CONFIG = """\
# The demo's config: a shop's customers, orders and unsubscribes -> Wiraya.
source:
  url: sqlite:///{db}
  timezone: Europe/Stockholm      # the shop writes local times without a zone
wiraya:
  base_url: {api}                 # the sandbox; in production https://api.wiraya.ai
  api_key: ${{WIRAYA_API_KEY:-{key}}}
  rate_limit: none
  bulk_size: 100
state: {state}
contacts:
  customers:
    table: customers
    id: customer_id
    cursor: updated_at
    personal:
      phoneNumber: {{column: mobile, region: SE}}
      givenName: first_name
      surName: last_name
    general:
      city: city
      accountStatus: status
      timeOfRegistration: created_at
    campaign:
      campaign: welcome-flow
      iteration: {{column: created_at, format: "%Y-%m"}}
      when: {{column: status, equals: active}}
events:
  conversions:
    table: orders
    id: order_id
    contact: customer_id
    cursor: created_at
    name: Conversion
  opt_outs:
    table: unsubscribes
    id: id
    contact: customer_id
    cursor: id                    # an integer cursor
    at: unsubscribed_at
    name: OptOut
"""

FIRST_NAMES = ["Anna", "Erik", "Maria", "Lars", "Karin", "Johan", "Eva", "Anders", "Sara",
               "Per", "Lena", "Nils", "Ida", "Olof", "Elin", "Gustav", "Frida", "Axel",
               "Maja", "Hugo"]
CITIES = ["Stockholm", "Göteborg", "Malmö", "Uppsala", "Umeå"]
# Phone numbers as shops store them: national, international, with 00, with spaces.
PHONES = ["070-413 45 61", "+46 70 123 45 67", "0046 73 222 33 44", "0701234567",
          "+46 76 555 01 02"]


def _schema(meta: sa.MetaData) -> dict[str, sa.Table]:
    customers = sa.Table(
        "customers", meta,
        sa.Column("customer_id", sa.Integer, primary_key=True),
        sa.Column("first_name", sa.String), sa.Column("last_name", sa.String),
        sa.Column("mobile", sa.String), sa.Column("city", sa.String),
        sa.Column("status", sa.String),
        sa.Column("created_at", sa.DateTime), sa.Column("updated_at", sa.DateTime, index=True))
    orders = sa.Table(
        "orders", meta,
        sa.Column("order_id", sa.Integer, primary_key=True),
        sa.Column("customer_id", sa.Integer), sa.Column("amount", sa.Numeric(10, 2)),
        sa.Column("created_at", sa.DateTime, index=True))
    unsubscribes = sa.Table(
        "unsubscribes", meta,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("customer_id", sa.Integer), sa.Column("unsubscribed_at", sa.DateTime))
    return {"customers": customers, "orders": orders, "unsubscribes": unsubscribes}


def _seed(engine: sa.Engine, tables: dict[str, sa.Table], now: datetime) -> None:
    customers = []
    for number in range(1, 21):
        phone = PHONES[number % len(PHONES)].replace("45 61", f"45 {number + 10:02d}")
        phone = phone.replace("45 67", f"45 {number + 10:02d}").replace(
            "33 44", f"33 {number + 10:02d}").replace("4567", f"45{number + 10:02d}").replace(
            "01 02", f"01 {number + 10:02d}")
        customers.append({
            "customer_id": number, "first_name": FIRST_NAMES[number - 1],
            "last_name": "Svensson" if number % 2 else "Lindqvist", "mobile": phone,
            "city": CITIES[number % len(CITIES)],
            "status": "active" if number % 7 else "paused",
            "created_at": now - timedelta(days=40 - number),
            "updated_at": now - timedelta(hours=30 - number)})
    customers[6]["mobile"] = "12345"  # customer 7: a number no one can call
    orders = [{"order_id": 100 + n, "customer_id": n * 2, "amount": Decimal("199.00") + n,
               "created_at": now - timedelta(hours=10 - n)} for n in range(1, 9)]
    orders.append({"order_id": 120, "customer_id": 21, "amount": Decimal("59.00"),
                   "created_at": now - timedelta(hours=1)})  # customer 21 is not there yet
    with engine.begin() as conn:
        conn.execute(tables["customers"].insert(), customers)
        conn.execute(tables["orders"].insert(), orders)
        conn.execute(tables["unsubscribes"].insert(),
                     [{"id": 1, "customer_id": 3, "unsubscribed_at": now - timedelta(hours=2)}])


def _change(engine: sa.Engine, tables: dict[str, sa.Table], now: datetime) -> list[str]:
    customers, orders = tables["customers"], tables["orders"]
    later = now + timedelta(minutes=5)
    with engine.begin() as conn:
        conn.execute(customers.update().where(customers.c.customer_id.in_([2, 5]))
                     .values(city="Lund", updated_at=later))
        conn.execute(customers.update().where(customers.c.customer_id == 7)
                     .values(mobile="+46 70 999 00 07", updated_at=later))
        # Touched but not changed: read again, compared, not sent.
        conn.execute(customers.update().where(customers.c.customer_id == 9)
                     .values(updated_at=later))
        conn.execute(customers.insert(), [{
            "customer_id": 21, "first_name": "Tove", "last_name": "Berg",
            "mobile": "070 111 22 33", "city": "Kiruna", "status": "active",
            "created_at": later, "updated_at": later}])
        conn.execute(orders.insert(), [
            {"order_id": 121, "customer_id": 4, "amount": Decimal("20.00"), "created_at": later},
            {"order_id": 122, "customer_id": 9, "amount": Decimal("35.50"), "created_at": later}])
        conn.execute(tables["unsubscribes"].insert(),
                     [{"id": 2, "customer_id": 12, "unsubscribed_at": later}])
    return ["customers 2 and 5 moved to Lund", "customer 7's phone number was fixed",
            "customer 9 was saved without a change", "customer 21 signed up (an order of "
            "theirs was waiting)", "2 new orders", "1 new unsubscribe"]


def _table(reports: list[Report]) -> Table:
    table = Table(show_edge=False, pad_edge=False, box=None)
    names = ["read", "sent", "skipped", "linked", "released", "waiting", "dead"]
    table.add_column("stream")
    for name in names:
        table.add_column(name, justify="right")
    for item in reports:
        table.add_row(item.stream, *(str(item.counts[name]) for name in names))
    return table


def run(folder: Path | None, out: Console) -> int:
    temporary = folder is None
    work = Path(tempfile.mkdtemp(prefix="connector-demo-")) if folder is None else folder
    if folder is not None and work.exists():
        for name in ("shop.db", "connector.yaml", "state"):
            target = work / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    work.mkdir(parents=True, exist_ok=True)
    try:
        with Sandbox(api_keys=[API_KEY]) as api:
            return _run(work, api, out, temporary)
    finally:
        if temporary:
            shutil.rmtree(work, ignore_errors=True)


def _run(work: Path, api: Sandbox, out: Console, temporary: bool) -> int:
    db = work / "shop.db"
    engine = sa.create_engine(f"sqlite:///{db}")
    meta = sa.MetaData()
    tables = _schema(meta)
    meta.create_all(engine)
    # The shop writes local Stockholm time without a zone, as the config says.
    now = datetime.now(ZoneInfo("Europe/Stockholm")).replace(microsecond=0, tzinfo=None)
    _seed(engine, tables, now)
    config_path = work / "connector.yaml"
    config_path.write_text(CONFIG.format(db=db, api=api.url, key=API_KEY,
                                         state=work / "state" / "connector.db"))
    settings = config.load(config_path)

    out.print("[bold]Wiraya connector demo[/]")
    out.print(f"  database  {db} (SQLite: 20 customers, 9 orders, 1 unsubscribe)", markup=False)
    out.print(f"  Wiraya    {api.url} (the sandbox: a local fake of the API)", markup=False)
    out.print(f"  config    {config_path}", markup=False)

    first = _pass(settings)
    out.print("\n[bold]Pass 1[/]: every row is new")
    out.print(_table(first))
    held = report.held(settings)
    for item in held:
        out.print(f"  {item['state']:7} {item['stream']} {item['id']}: {item['reason']}",
                  markup=False)

    out.print("\n[bold]Changes[/] in the database:")
    for line in _change(engine, tables, now):
        out.print(f"  - {line}", markup=False)
    engine.dispose()

    second = _pass(settings)
    out.print("\n[bold]Pass 2[/]: only what changed is sent")
    out.print(_table(second))
    held = report.held(settings)
    out.print(f"  still held: {len(held)}" if held else "  nothing held back", markup=False)

    events = Counter(body.get("name") for _, body in api.events)
    out.print("\n[bold]The sandbox received[/]")
    out.print(f"  {sum(api.contact_writes.values())} contact upserts for "
              f"{len(api.contacts)} contacts", markup=False)
    out.print(f"  {len(api.links)} campaign links", markup=False)
    out.print("  " + ", ".join(f"{count} {name}" for name, count in sorted(events.items()))
              + " events", markup=False)
    out.print(f"  {len(api.requests)} requests in all", markup=False)
    if temporary:
        out.print("\nThe demo's files were temporary; keep them with: connector demo --dir DIR")
    else:
        out.print(f"\nLook around: connector --config {config_path} status", markup=False)
    return 0 if all(r.exit_code == 0 for r in first + second) else 1


def _pass(settings: config.Settings) -> list[Report]:
    async def go() -> list[Report]:
        async with session.opened(settings, one_shot=True) as ctx:
            return await session.run_streams(ctx, session.pick_streams(settings, []))

    return asyncio.run(go())
