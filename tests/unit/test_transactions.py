"""Transaction logs (`pipeline/tools/transactions.py`): the layouts that read, what is left
out and counted, the errors that name the line, and the order events they become."""
from datetime import date, datetime, timezone
from decimal import Decimal

import pytest

from pipeline.tools.transactions import (
    NO_CUSTOMER, RETURN, TransactionError, occurred_at, read_transactions, to_order_events, write_sample_csv,
)
from schemas.events import parse_event


def test_read_transactions_with_and_without_header(tmp_path):
    a = tmp_path / "a.csv"
    a.write_text("customer_id,date,amount\nC1,2024-05-01,12.50\nC2,2024-05-02T10:15:00+02:00,3\n")
    b = tmp_path / "b.csv"
    b.write_text("C1;2024-05-01;12.50\nC2;2024-05-02T10:15:00;3\n")
    c = tmp_path / "c.csv"
    c.write_text("amount,extra,CustomerID,InvoiceDate\n7.00,x,C9,2024-01-31\n")
    ra = read_transactions(a).rows
    assert ra[0] == ("C1", date(2024, 5, 1), Decimal("12.50"))
    assert ra[1][1] == datetime(2024, 5, 2, 8, 15, tzinfo=timezone.utc)
    rb = read_transactions(b).rows
    assert rb[1][1] == datetime(2024, 5, 2, 10, 15, tzinfo=timezone.utc)   # naive = UTC
    assert read_transactions(c).rows == [("C9", date(2024, 1, 31), Decimal("7.00"))]


def test_read_transactions_in_cdnows_own_layout(tmp_path):
    """CDNOW's master file as `lifetimes` ships it: columns separated by spaces, compact dates,
    the quantity before the amount (`dollar_value`). It reads as is. Without its header row
    which column is the amount would be a guess (the third is the quantity): refused, with
    the fix; so is a header row that names no amount column."""
    body = " 00001 19970101  1   11.77\n 00002 19970112  2   12.00\n"
    want = [("00001", date(1997, 1, 1), Decimal("11.77")), ("00002", date(1997, 1, 12), Decimal("12.00"))]
    p = tmp_path / "CDNOW_master.txt"
    p.write_text(" customer_id  date number_of_cds  dollar_value\n" + body)
    assert read_transactions(p).rows == want
    p.write_text(body)
    with pytest.raises(TransactionError) as e:
        read_transactions(p)
    assert "CDNOW_master.txt:1: 4 columns and no header row" in str(e.value)
    assert "--columns customer_id,date,quantity,amount" in str(e.value)
    # the file as published (no header row) reads with its columns named by the caller; a
    # header row the file has anyway is skipped; names that leave out the amount are refused
    named = ["customer_id", "date", "quantity", "amount"]
    assert read_transactions(p, columns=named).rows == want
    with pytest.raises(TransactionError, match="columns customer_id,date,quantity: they do not name"):
        read_transactions(p, columns=named[:3])
    p.write_text("customer_id date quantity amount\n" + body)
    assert read_transactions(p).rows == want
    assert read_transactions(p, columns=named).rows == want
    assert read_transactions(p, columns=["customer", "date", "amount", "n"]).rows == [   # the names given stand
        ("00001", date(1997, 1, 1), Decimal("1")), ("00002", date(1997, 1, 12), Decimal("2"))]
    p.write_text("customer_id date quantity paid\n" + body)
    with pytest.raises(TransactionError, match="CDNOW_master.txt:1: the header row does not name.*--columns"):
        read_transactions(p)
    assert read_transactions(p, columns=named).rows == want   # names in place of the header's
    q = tmp_path / "compact.csv"
    q.write_text("C1,20240501,3.5\n")   # a compact date is a date (noon UTC), as 2024-05-01
    assert read_transactions(q).rows == [("C1", date(2024, 5, 1), Decimal("3.5"))]


@pytest.mark.parametrize("body, line, words", [
    ("customer_id,date,amount\nC1,2024-05-01,1\nC2,2024-13-01,2\n", 3, "bad date"),
    ("C1,2024-05-01,1\nC2,2024-05-02,abc\n", 2, "bad amount"),
    ("C1,2024-05-01,1\nC2,2024-05-02\n", 2, "columns"),
    ("C1,2024-05-01,NaN\n", 1, "bad amount"),
    ("C1,yesterday,5\n", 1, "bad date"),
])
def test_read_transactions_errors_name_the_line(tmp_path, body, line, words):
    p = tmp_path / "t.csv"
    p.write_text(body)
    with pytest.raises(TransactionError) as e:
        read_transactions(p)
    assert f"t.csv:{line}:" in str(e.value) and words in str(e.value)


def test_read_transactions_empty_file(tmp_path):
    p = tmp_path / "e.csv"
    p.write_text("")
    with pytest.raises(TransactionError, match="empty"):
        read_transactions(p)


def test_rows_with_no_customer_and_purchases_below_zero_are_left_out_and_counted(tmp_path):
    """A guest checkout names no customer and a refund is not a purchase: neither can be
    scored, so each is left out and counted by reason, never an error and never silent."""
    p = tmp_path / "t.csv"
    p.write_text("customer_id,date,amount\nC1,2024-05-01,1\n,2024-05-01,9\nC2,2024-05-02,-4.00\n"
                 "C2,2024-05-03,0\n ,2024-05-04,2\n")
    log = read_transactions(p)
    assert log.rows == [("C1", date(2024, 5, 1), Decimal("1")), ("C2", date(2024, 5, 3), Decimal("0"))]
    assert log.skipped == {NO_CUSTOMER: 2, RETURN: 1} and log.lines == 5


def test_an_export_of_invoice_lines_reads_as_one_purchase_per_invoice(tmp_path):
    """The online-retail layout: one row per invoice line, the amount a quantity times a unit
    price (the `Price` column is a unit price when a quantity stands beside it), invoices
    whose lines net below zero (the `C…` cancellations) left out, rows with no customer left
    out, extra columns ignored. The same purchases written one row each read the same."""
    p = tmp_path / "online_retail_II.csv"
    p.write_text(
        "Invoice,StockCode,Description,Quantity,InvoiceDate,Price,Customer ID,Country\n"
        "489434,85048,\"15CM CHRISTMAS GLASS BALL 20 LIGHTS\",12,2009-12-01 07:45:00,6.95,13085.0,United Kingdom\n"
        "489434,79323P,PINK CHERRY LIGHTS,12,2009-12-01 07:45:00,6.75,13085.0,United Kingdom\n"
        "489435,22350,CAT BOWL ,12,2009-12-01 07:46:00,2.55,13085.0,United Kingdom\n"
        "489436,48173C,DOOR MAT BLACK FLOCK ,10,2009-12-01 09:06:00,5.95,,United Kingdom\n"
        "C489449,22087,PAPER BUNTING WHITE LACE,-12,2009-12-01 10:33:00,2.95,16321.0,Australia\n"
        "489450,22087,PAPER BUNTING WHITE LACE,24,2009-12-01 10:40:00,2.95,16321.0,Australia\n"
        "489450,POST,POSTAGE,1,2009-12-01 10:40:00,18.00,16321.0,Australia\n"
        "489450,22087,PAPER BUNTING WHITE LACE,-2,2009-12-01 10:41:00,2.95,16321.0,Australia\n")
    log = read_transactions(p)
    at = lambda h, m: datetime(2009, 12, 1, h, m, tzinfo=timezone.utc)   # noqa: E731
    assert log.rows == [("13085.0", at(7, 45), Decimal("164.40")), ("13085.0", at(7, 46), Decimal("30.60")),
                        ("16321.0", at(10, 40), Decimal("82.90"))]
    assert log.skipped == {NO_CUSTOMER: 1, RETURN: 1} and log.lines == 8
    # no invoice column: every line is a purchase of quantity × price
    p.write_text("CustomerID,InvoiceDate,Quantity,UnitPrice\n17850,2010-12-01 08:26,6,2.55\n")
    assert read_transactions(p).rows == [("17850", datetime(2010, 12, 1, 8, 26, tzinfo=timezone.utc),
                                          Decimal("15.30"))]
    # an amount column wins over quantity × price; a price alone is what was paid
    p.write_text("customer_id,date,quantity,price,total\nC1,2024-05-01,2,3,5.50\n")
    assert read_transactions(p).rows[0][2] == Decimal("5.50")
    p.write_text("customer_id,date,price\nC1,2024-05-01,3\n")
    assert read_transactions(p).rows[0][2] == Decimal("3")
    p.write_text("customer_id,date,quantity,price\nC1,2024-05-01,two,3\n")
    with pytest.raises(TransactionError, match=r"online_retail_II.csv:2: bad quantity or unit price 'two'"):
        read_transactions(p)


def test_a_spreadsheet_export_that_is_not_utf8_reads(tmp_path):
    """The online-retail exports are Windows-1252 (`£`, accented product names): the ids,
    dates and amounts read all the same, and the log says which encoding it read."""
    p = tmp_path / "data.csv"
    p.write_bytes("InvoiceNo,Description,Quantity,InvoiceDate,UnitPrice,CustomerID\n"
                  "536365,CAFÉ MUG £1,2,2010-12-01 08:26,2.55,17850\n".encode("cp1252"))
    log = read_transactions(p)
    assert log.rows == [("17850", datetime(2010, 12, 1, 8, 26, tzinfo=timezone.utc), Decimal("5.10"))]
    assert log.encoding == "cp1252"
    p.write_bytes("\ufeffcustomer_id,date,amount\nCé1,2024-05-01,1\n".encode("utf-8"))   # a BOM
    log = read_transactions(p)
    assert log.rows[0][0] == "Cé1" and log.encoding == "utf-8"


def test_slashed_dates_read_in_the_order_the_file_shows(tmp_path):
    """`12/1/2010 8:26` is the 1st of December only because the same file also has
    `12/13/2010`: the order of day and month is read from the whole file, and a file that
    cannot show it is refused with the fix (a date format), never guessed."""
    p = tmp_path / "t.csv"
    p.write_text("CustomerID,InvoiceDate,amount\n17850,12/1/2010 8:26,1\n17850,12/13/2010 9:00,2\n")
    assert [r[1] for r in read_transactions(p).rows] == [
        datetime(2010, 12, 1, 8, 26, tzinfo=timezone.utc), datetime(2010, 12, 13, 9, 0, tzinfo=timezone.utc)]
    p.write_text("C1;01.12.2010;1\nC1;13.12.2010;2\n")       # day first, no header row
    assert [r[1] for r in read_transactions(p).rows] == [date(2010, 12, 1), date(2010, 12, 13)]
    p.write_text("C1,2010/12/01,1\n")
    assert read_transactions(p).rows[0][1] == date(2010, 12, 1)
    p.write_text("C1,01/12/2010,1\nC1,02/12/2010,1\n")
    with pytest.raises(TransactionError, match=r"t.csv:1: dates such as '01/12/2010' read as day/month and as "
                                               r"month/day alike.*--date-format"):
        read_transactions(p)
    assert read_transactions(p, "%d/%m/%Y").rows[1][1] == date(2010, 12, 2)
    assert read_transactions(p, "%m/%d/%Y").rows[1][1] == date(2010, 2, 12)
    p.write_text("C1,13/12/2010,1\nC1,12/13/2010,1\n")
    with pytest.raises(TransactionError, match="above 12 in both"):
        read_transactions(p)
    p.write_text("C1,1/12/10,1\n")
    with pytest.raises(TransactionError, match="two-digit year"):
        read_transactions(p)
    p.write_text("C1,2010-12-01,1\nC1,31/02/2010,1\n")
    with pytest.raises(TransactionError, match=r"t.csv:2: bad date '31/02/2010'"):
        read_transactions(p)
    p.write_text("C1,2010-12-01,1\n")
    with pytest.raises(TransactionError, match=r"bad date '2010-12-01' \(expected the date format '%d/%m/%Y'\)"):
        read_transactions(p, "%d/%m/%Y")


def test_to_order_events_are_valid_paid_orders():
    rows = [("C1", date(2024, 5, 1), Decimal("12.50")), ("C1", date(2024, 5, 1), Decimal("12.50")),
            ("C2", datetime(2024, 5, 2, 8, 15, tzinfo=timezone.utc), Decimal("3"))]
    evs = [parse_event(v) for v in to_order_events(rows)]
    assert [e.status.value for e in evs] == ["paid"] * 3
    assert evs[0].occurred_at == datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
    assert evs[2].occurred_at == datetime(2024, 5, 2, 8, 15, tzinfo=timezone.utc)
    assert evs[0].event_id != evs[1].event_id                    # two identical purchases stay two
    assert to_order_events(rows) == to_order_events(rows)         # deterministic ids
    assert evs[0].amount == Decimal("12.50") and evs[0].customer_id == "C1"
    assert occurred_at(date(2024, 1, 1)).hour == 12


def test_sample_csv(tmp_path):
    log = write_sample_csv(tmp_path / "s.csv", customers=30, days=120)
    rows = read_transactions(log.path).rows
    assert len(rows) == log.rows > 30
    assert len({r[0] for r in rows}) <= 30
    assert all(parse_event(v).type == "order" for v in to_order_events(rows))
