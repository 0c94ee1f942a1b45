"""A CSV transaction log → wire-format `paid` order events.

Real purchase histories (a retailer's transaction export, the "online retail" style data
sets) are the data nobody here tuned the scores to; this turns them into the input
contract so they can be replayed through the very same core.

Layouts that read:
- three columns, in the order customer id, date, amount, with no header row;
- a header row that names the columns (any order, other columns ignored), e.g.
  `customer_id,date,amount`. A purchase's amount is an amount column (`amount`, `total`,
  `sales`, …) or, for an export of invoice lines, a quantity column times a unit price column
  (`Quantity` × `UnitPrice` or `Price`). With an invoice column (`Invoice`, `InvoiceNo`,
  `order_id`, …) the lines of one customer's invoice are one purchase: the sum of its lines,
  at its first line's time. Without one, each row is a purchase.
Without a header row a file must have exactly three columns: with more, which one is the
amount is a guess (CDNOW's master file has the quantity before it), so it is refused with
the fix, unless the columns are named by the caller (`columns`, `cxpulse evaluate --columns`:
`customer_id,date,quantity,amount` reads CDNOW's master file as published).

Dates: an ISO date (`2024-05-01`, or compact `20240501`) or an ISO datetime
(`2024-05-01T10:15:00+02:00`, or with a space); without an offset a time is taken as UTC.
Dates written with slashes or dots (`12/1/2010 8:26`, `01.12.2010`) read when the file
itself shows the order: a first field above 12 somewhere means day first, a second field
above 12 means month first; a file where neither happens is refused, and `date_format`
(strptime, e.g. `%d/%m/%Y %H:%M`) settles it. Comma, semicolon or tab separated, or columns
separated by spaces (as CDNOW's master file).

A file that is not UTF-8 is read as Windows-1252 (spreadsheet exports; `TransactionLog.encoding`
says which). What is left out, counted by reason (`TransactionLog.skipped`), never an error: rows with no
customer id (guest checkouts), and purchases whose amount is below zero (returns and
cancellations, e.g. the `C…` invoices of an online-retail export; refunds are not purchases).
Everything else that does not read is an error naming the line.
"""
from __future__ import annotations

import csv
import hashlib
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, time, timezone
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Callable, Iterable

Row = tuple[str, "date | datetime", Decimal]

_NAMES = {
    "customer": ("customer_id", "customer", "customerid", "customer id", "client_id", "user_id", "id"),
    "date": ("date", "occurred_at", "timestamp", "datetime", "invoicedate", "invoice_date", "order_date", "time"),
    "amount": ("amount", "value", "total", "revenue", "sales", "dollar_value", "order_value",
               "order_total", "sales_amount", "net_amount", "line_total"),
    "unit_price": ("price", "unitprice", "unit_price", "unit price", "price_each", "priceeach", "item_price"),
    "quantity": ("quantity", "qty", "units", "quantity_ordered"),
    "invoice": ("invoice", "invoiceno", "invoice_no", "invoice_id", "invoice number", "order_id", "orderid",
                "order_number", "transaction_id", "receipt_id", "basket_id"),
}
_REQUIRED = ("customer", "date")

NO_CUSTOMER = "no customer id"
RETURN = "return or cancellation (amount below zero)"

# 12/1/2010 8:26, 01.12.2010, 2010/12/01 23:59:59
_SLASHED = re.compile(r"(\d{1,4})[/.-](\d{1,2})[/.-](\d{1,4})(?:[ T](\d{1,2}):(\d{2})(?::(\d{2}))?)?")


class TransactionError(ValueError):
    """A transaction log that cannot be read; the message names the line."""


@dataclass(frozen=True)
class TransactionLog:
    """The purchases of a log (customer id, date or aware datetime, amount) in the order of
    their first line, and what was left out: reason → rows (no customer id) or purchases."""
    rows: list[Row]
    skipped: dict[str, int] = field(default_factory=dict)
    lines: int = 0
    encoding: str = "utf-8"     # the file's: "utf-8", or "cp1252" when it is not UTF-8


def _parse_iso_date(text: str) -> date | datetime:
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


def _is_date(text: str) -> bool:
    try:
        _parse_iso_date(text)
        return True
    except ValueError:
        return _SLASHED.fullmatch(text.strip()) is not None


def _is_value(cell: str) -> bool:
    if _is_date(cell):
        return True
    try:
        _parse_amount(cell)
        return True
    except (ValueError, InvalidOperation):
        return False


def _accepted_names() -> str:
    return "; ".join("/".join(_NAMES[r][:3]) + "/…" for r in ("customer", "date", "amount"))


def _header_map(cells: list[str]) -> dict[str, int] | None:
    low = [c.strip().lower() for c in cells]
    found: dict[str, int] = {}
    for role, names in _NAMES.items():
        for i, c in enumerate(low):
            if c in names and i not in found.values():
                found[role] = i
                break
    if not all(r in found for r in _REQUIRED) or not ("amount" in found or "unit_price" in found):
        return None
    if "amount" in found or "quantity" not in found:    # a price with no quantity is what was paid
        price = found.pop("unit_price", None)
        found.pop("quantity", None)
        if "amount" not in found and price is not None:
            found["amount"] = price
    return found


def _looks_like_data(cells: list[str]) -> bool:
    if len(cells) < 3:
        return False
    try:
        _parse_amount(cells[2])
    except (ValueError, InvalidOperation):
        return False
    return _is_date(cells[1])


def _strptime_parser(fmt: str) -> Callable[[str], date | datetime]:
    with_time = any(d in fmt for d in ("%H", "%I", "%M", "%S", "%p", "%z", "%X", "%c"))

    def parse(text: str) -> date | datetime:
        dt = datetime.strptime(text.strip(), fmt)
        if not with_time:
            return dt.date()
        return dt if dt.tzinfo is not None else dt.replace(tzinfo=timezone.utc)
    return parse


def _slashed_parser(path: Path, texts: list[tuple[int, str]]) -> Callable[[str], date | datetime]:
    """The day/month order of the slashed dates of a file, from the file itself."""
    firsts, seconds, year_first = 0, 0, None
    first_line, first_text = 0, ""       # the first slashed date, named in the errors
    for n, t in texts:
        m = _SLASHED.fullmatch(t.strip())
        if m is None:
            continue
        a, b, c = m.group(1), m.group(2), m.group(3)
        if year_first is None:
            year_first, first_line, first_text = len(a) == 4, n, t
        if year_first:
            continue
        if len(c) != 4:
            raise TransactionError(f"{path}:{n}: date {t!r} has a two-digit year: pass a date format "
                                   f"(--date-format, e.g. %d/%m/%y)")
        firsts, seconds = max(firsts, int(a)), max(seconds, int(b))
    if year_first:
        order = (1, 2, 3)           # year, month, day
    elif firsts > 12 and seconds > 12:
        raise TransactionError(f"{path}:{first_line}: dates such as {first_text!r} have fields above 12 in both the first and "
                               f"second place: no single day/month order reads them")
    elif firsts > 12:
        order = (3, 2, 1)           # day, month, year
    elif seconds > 12:
        order = (3, 1, 2)           # month, day, year
    else:
        raise TransactionError(f"{path}:{first_line}: dates such as {first_text!r} read as day/month and as month/day alike "
                               f"(no field above 12 in the whole file): pass a date format, e.g. "
                               f"--date-format '%d/%m/%Y %H:%M' or '%m/%d/%Y %H:%M'")

    def parse(text: str) -> date | datetime:
        s = text.strip()
        try:
            return _parse_iso_date(s)
        except ValueError:
            pass
        m = _SLASHED.fullmatch(s)
        if m is None:
            raise ValueError(s)
        y, mo, d = (int(m.group(i)) for i in order)
        if m.group(4) is None:
            return date(y, mo, d)
        return datetime(y, mo, d, int(m.group(4)), int(m.group(5)), int(m.group(6) or 0), tzinfo=timezone.utc)
    return parse


def _read_text(path: Path) -> tuple[str, str]:
    """The file's text and its encoding: UTF-8 (a byte-order mark dropped), else Windows-1252,
    the encoding of many spreadsheet exports (the online-retail data sets among them: `£` and
    accented product names). Only ids, dates and numbers are read from it."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig"), "utf-8"
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace"), "cp1252"


def _split_lines(path: Path, text: str) -> Iterable[list[str]]:
    if not text.strip():
        raise TransactionError(f"{path}: empty file, expected columns customer_id,date,amount")
    lines = text.splitlines()
    first = lines[0]
    delim = max((",", ";", "\t"), key=first.count)
    if not first.count(delim) and len(first.split()) >= 3:   # columns separated by spaces
        return (line.split() for line in lines)
    return csv.reader(lines, delimiter=delim)


def read_transactions(csv_path: str | Path, date_format: str | None = None,
                      columns: list[str] | None = None) -> TransactionLog:
    """The purchases of a CSV transaction log (the layouts of the module's doc). `columns`:
    the columns' names, in order, read as a header row would be (for a file without one; a
    header row the file has anyway is skipped).

    Raises TransactionError naming the line for a missing column, an unparseable date or
    amount, or a customer id over 128 characters. Rows with no customer id and purchases
    below zero are left out and counted in `skipped`.
    """
    path = Path(csv_path)
    cols: dict[str, int] = {"customer": 0, "date": 1, "amount": 2}
    if columns is not None:
        named = _header_map(columns)
        if named is None:
            raise TransactionError(f"columns {','.join(columns)}: they do not name a customer id, a date and an amount "
                                   f"column ({_accepted_names()}, or a quantity and a unit price; name the others "
                                   f"anything else, e.g. customer_id,date,quantity,amount)")
        cols = named
    raw: list[tuple[int, str, str, Decimal, str]] = []     # line, customer, date text, amount, invoice
    skipped: Counter[str] = Counter()
    lines = 0
    text, encoding = _read_text(path)
    for n, cells in enumerate(_split_lines(path, text), start=1):
        if not cells or all(not c.strip() for c in cells):
            continue
        if n == 1 and columns is not None:
            if not any(_is_value(c) for c in cells):   # a header row: the names given stand
                continue
        elif n == 1:
            data = _looks_like_data(cells)
            hm = None if data else _header_map(cells)
            if hm is None and len(cells) == 3 and not any(_is_value(c) for c in cells):
                hm = {"customer": 0, "date": 1, "amount": 2}   # a header with other names: positional
            if hm is not None:
                cols = hm
                continue
            if len(cells) > 3 and data:
                raise TransactionError(
                    f"{path}:1: {len(cells)} columns and no header row naming them: which one is the amount "
                    f"would be a guess. Name the columns in order (`cxpulse evaluate --columns "
                    f"customer_id,date,quantity,amount`, as CDNOW's master file has them), or add a header row "
                    f"naming the customer id, date and amount columns ({_accepted_names()}; other columns are "
                    f"ignored)")
            if len(cells) > 3 and not any(_is_value(c) for c in cells):
                raise TransactionError(
                    f"{path}:1: the header row does not name a customer id, a date and an amount column "
                    f"({_accepted_names()}, or a quantity and a unit price; other columns are ignored): rename "
                    f"them there, or name every column in order with `cxpulse evaluate --columns` (e.g. "
                    f"order_id,customer_id,date,amount)")
        lines += 1
        if len(cells) <= max(cols.values()):
            raise TransactionError(f"{path}:{n}: expected at least {max(cols.values()) + 1} columns, got {len(cells)}")
        cid = cells[cols["customer"]].strip()
        if not cid:
            skipped[NO_CUSTOMER] += 1
            continue
        if len(cid) > 128:
            raise TransactionError(f"{path}:{n}: customer id longer than 128 characters")
        try:
            if "amount" in cols:
                amount = _parse_amount(cells[cols["amount"]])
            else:
                amount = _parse_amount(cells[cols["quantity"]]) * _parse_amount(cells[cols["unit_price"]])
        except (InvalidOperation, ValueError):
            what = ("amount " + repr(cells[cols["amount"]].strip()) if "amount" in cols else
                    f"quantity or unit price {cells[cols['quantity']].strip()!r} × {cells[cols['unit_price']].strip()!r}")
            raise TransactionError(f"{path}:{n}: bad {what}") from None
        invoice = cells[cols["invoice"]].strip() if "invoice" in cols else ""
        raw.append((n, cid, cells[cols["date"]], amount, invoice))

    parse_date: Callable[[str], date | datetime] | None = _strptime_parser(date_format) if date_format else None
    purchases: dict[tuple[str, str] | int, list] = {}
    for n, cid, d, amount, invoice in raw:
        key: tuple[str, str] | int = (cid, invoice) if invoice else n
        try:
            when = parse_date(d) if parse_date is not None else _parse_iso_date(d)
        except ValueError:
            if parse_date is None and _SLASHED.fullmatch(d.strip()):
                parse_date = _slashed_parser(path, [(m, t) for m, _, t, _, _ in raw])
                try:
                    when = parse_date(d)
                except ValueError:
                    raise TransactionError(f"{path}:{n}: bad date {d.strip()!r} (not a calendar date)") from None
            else:
                expected = f"the date format {date_format!r}" if date_format else "ISO date or datetime"
                raise TransactionError(f"{path}:{n}: bad date {d.strip()!r} (expected {expected})") from None
        if key in purchases:           # a further line of the invoice: its amount counts
            purchases[key][2] += amount
        else:
            purchases[key] = [cid, when, amount]
    rows: list[Row] = []
    for cid, when, amount in purchases.values():
        if amount.is_signed():       # below zero, or the -0.00 of a free item's cancellation
            skipped[RETURN] += 1
        else:
            rows.append((cid, when, amount))
    return TransactionLog(rows, dict(skipped), lines, encoding)


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
