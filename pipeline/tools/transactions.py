"""A CSV transaction log (customer id, date, amount) → wire-format `paid` order events.

Real purchase histories (a retailer's transaction export, the "online retail" style data
sets) are the data nobody here tuned the scores to; this turns them into the input
contract so they can be replayed through the very same core.

CSV layout: three columns, in the order customer id, date, amount; or a header row that
names them (any order, extra columns ignored), e.g. `customer_id,date,amount`. Without a
header row a file must have exactly three columns: with more, which one is the amount is a
guess (CDNOW's master file has the quantity before it), so it is refused with the fix. The
date is an ISO date (`2024-05-01`, or compact `20240501`) or an ISO datetime
(`2024-05-01T10:15:00+02:00`; without an offset it is taken as UTC). Comma, semicolon or tab
separated, or columns separated by spaces (as CDNOW's master file). Errors name the line.
"""
from __future__ import annotations

import csv
import hashlib
import json
from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime, time, timezone
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Iterable

Row = tuple[str, "date | datetime", Decimal]

_NAMES = {
    "customer": ("customer_id", "customer", "customerid", "customer id", "client_id", "user_id", "id"),
    "date": ("date", "occurred_at", "timestamp", "datetime", "invoicedate", "invoice_date", "order_date", "time"),
    "amount": ("amount", "value", "total", "revenue", "price", "sales", "dollar_value", "order_value",
               "order_total", "sales_amount", "net_amount"),
}


class TransactionError(ValueError):
    """A transaction log that cannot be read; the message names the line."""


def _parse_date(text: str) -> date | datetime:
    s = text.strip()
    if len(s) == 10 or (len(s) == 8 and s.isdigit()):   # 2024-05-01, 20240501
        return date.fromisoformat(s)
    dt = datetime.fromisoformat(s.replace("Z", "+00:00") if s.endswith("Z") else s)
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=timezone.utc)


def _parse_amount(text: str) -> Decimal:
    a = Decimal(text.strip())
    if not a.is_finite():
        raise InvalidOperation
    return a


def _accepted_names() -> str:
    return "; ".join("/".join(names[:3]) + "/…" for names in _NAMES.values())


def _header_map(cells: list[str]) -> dict[str, int] | None:
    low = [c.strip().lower() for c in cells]
    found: dict[str, int] = {}
    for role, names in _NAMES.items():
        for i, c in enumerate(low):
            if c in names and i not in found.values():
                found[role] = i
                break
    return found if len(found) == 3 else None


def _looks_like_data(cells: list[str]) -> bool:
    if len(cells) < 3:
        return False
    try:
        _parse_date(cells[1])
        _parse_amount(cells[2])
        return True
    except (ValueError, InvalidOperation):
        return False


def _is_value(cell: str) -> bool:
    for parse in (_parse_date, _parse_amount):
        try:
            parse(cell)
            return True
        except (ValueError, InvalidOperation):
            pass
    return False


def read_transactions(csv_path: str | Path) -> list[Row]:
    """Rows (customer_id, date or aware datetime, amount) in file order.

    Raises TransactionError naming the line for a missing column, an empty customer id,
    an unparseable date or amount, or a negative amount (refunds are not purchases:
    remove them or net them out before export).
    """
    path = Path(csv_path)
    with open(path, newline="", encoding="utf-8-sig") as fh:
        text = fh.read()
    if not text.strip():
        raise TransactionError(f"{path}: empty file, expected columns customer_id,date,amount")
    lines = text.splitlines()
    first = lines[0]
    delim = max((",", ";", "\t"), key=first.count)
    cells_of: Iterable[list[str]]
    if not first.count(delim) and len(first.split()) >= 3:   # columns separated by spaces
        cells_of = (line.split() for line in lines)
    else:
        cells_of = csv.reader(lines, delimiter=delim)
    rows: list[Row] = []
    cols = (0, 1, 2)
    for n, cells in enumerate(cells_of, start=1):
        if not cells or all(not c.strip() for c in cells):
            continue
        if n == 1:
            data = _looks_like_data(cells)
            hm = None if data else _header_map(cells)
            if hm is None and len(cells) == 3 and not any(_is_value(c) for c in cells):
                hm = {"customer": 0, "date": 1, "amount": 2}   # a header with other names: positional
            if hm is not None:
                cols = (hm["customer"], hm["date"], hm["amount"])
                continue
            if len(cells) > 3 and data:
                raise TransactionError(
                    f"{path}:1: {len(cells)} columns and no header row naming them: which one is the amount "
                    f"would be a guess. Add a header row naming the customer id, date and amount columns "
                    f"({_accepted_names()}; other columns are ignored), e.g. `customer_id date quantity amount`")
            if len(cells) > 3 and not any(_is_value(c) for c in cells):
                raise TransactionError(
                    f"{path}:1: the header row does not name a customer id, a date and an amount column "
                    f"({_accepted_names()}; other columns are ignored)")
        if len(cells) <= max(cols):
            raise TransactionError(f"{path}:{n}: expected at least {max(cols) + 1} columns, got {len(cells)}")
        cid, d, a = (cells[i].strip() for i in cols)
        if not cid:
            raise TransactionError(f"{path}:{n}: empty customer id")
        if len(cid) > 128:
            raise TransactionError(f"{path}:{n}: customer id longer than 128 characters")
        try:
            when = _parse_date(d)
        except ValueError:
            raise TransactionError(f"{path}:{n}: bad date {d!r} (expected ISO date or datetime)") from None
        try:
            amount = _parse_amount(a)
        except (InvalidOperation, ValueError):
            raise TransactionError(f"{path}:{n}: bad amount {a!r}") from None
        if amount < 0:
            raise TransactionError(f"{path}:{n}: negative amount {a!r} (refunds are not purchases)")
        rows.append((cid, when, amount))
    return rows


def occurred_at(when: date | datetime) -> datetime:
    """Event time of a transaction: noon UTC of a bare date, else the datetime itself."""
    if isinstance(when, datetime):
        return when if when.tzinfo is not None else when.replace(tzinfo=timezone.utc)
    return datetime.combine(when, time(12, 0), tzinfo=timezone.utc)


def _rfc3339(dt: datetime) -> str:
    s = dt.isoformat()
    return s[:-6] + "Z" if s.endswith("+00:00") else s


def to_order_events(rows: Iterable[Row], currency: str = "EUR", channel: str = "store") -> list[bytes]:
    """One `paid` order event per transaction, in the input order.

    event_id and order_id are derived from the row's content and its ordinal among
    identical rows, so re-running the conversion gives the same ids (replays deduplicate)
    while two identical purchases on one day stay two events.
    """
    seen: Counter[tuple[str, str, str]] = Counter()
    out: list[bytes] = []
    for cid, when, amount in rows:
        at = _rfc3339(occurred_at(when))
        ident = (cid, at, str(amount))
        k = seen[ident]
        seen[ident] += 1
        digest = hashlib.sha256(f"{cid}\x1f{at}\x1f{amount}\x1f{k}".encode()).hexdigest()[:24]
        out.append(json.dumps({
            "type": "order", "event_id": f"txn-{digest}", "customer_id": cid, "occurred_at": at,
            "channel": channel, "schema_version": 1, "order_id": f"txn-{digest}", "status": "paid",
            "amount": str(amount), "currency": currency,
        }, separators=(",", ":")).encode())
    return out


@dataclass(frozen=True)
class SampleLog:
    path: Path
    customers: int
    rows: int


def write_sample_csv(path: str | Path, customers: int = 200, days: int = 365, seed: int = 11,
                     end: date = date(2024, 12, 31), header: bool = True) -> SampleLog:
    """A small synthetic transaction log for tests: gamma-distributed purchase rates,
    lognormal amounts, and a share of customers who stop buying at some point."""
    import random
    from datetime import timedelta

    rng = random.Random(seed)
    start = end - timedelta(days=days)
    n = 0
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        if header:
            w.writerow(["customer_id", "date", "amount"])
        for i in range(customers):
            rate = rng.gammavariate(1.5, 1 / (1.5 * 20.0))
            aov = rng.lognormvariate(3.5, 0.8)
            stop = days if rng.random() < 0.7 else rng.uniform(0.3 * days, days)
            t = rng.uniform(0, 30)
            while t < stop:
                d = start + timedelta(days=int(t))
                w.writerow([f"T{i:05d}", d.isoformat(), f"{max(1.0, rng.lognormvariate(0, 0.4) * aov):.2f}"])
                n += 1
                t += rng.expovariate(rate)
    return SampleLog(Path(path), customers, n)
