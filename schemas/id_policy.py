"""What an id (event_id, customer_id, staff_id, order_id, complaint_id) may look like.

Ids are pseudonymous keys: they are copied into every output (cx.scores, alert reasons,
every ClickHouse table, the state, cx_erasures), so an id that carries personal data
would spread it everywhere and keep it for good. The contract therefore accepts ids of
one strict shape, `ID_PATTERN`: 1–128 characters, ASCII letters, digits and `. _ : -`,
starting with a letter or digit. That excludes whitespace, `@`, `+`, `(`, `)`, `,`,
control characters (NUL, …), bidirectional overrides (U+202E, …) and every other
non-ASCII character.

Unicode normalisation: ids are *rejected*, not normalised. The pattern is ASCII, so the
question only arises for non-ASCII ids, and normalising them (NFC/NFKC) would silently
merge ids that the producing system keeps apart (two customers becoming one); a
producer that sends such ids gets a dead letter (`invalid_id`) and can fix its mapping.

Rejections say which rule was broken and never echo the value (it may be personal data):
- `personal_data`: the id contains an e-mail address or a phone number shape
  (`EMAIL_SHAPE`, `PHONE_SHAPE`), whether or not it would also break the pattern;
- `invalid_id`: any other id outside the pattern.

A bare run of digits (`4915112345678`) cannot be told from a customer number and is
accepted; digit groups split like a phone number (`555-010-9999`, `030.1234.5678`) are
not, UUIDs are (see PHONE_GROUPS). A deployment can narrow the pattern with `CXPULSE_ID_PATTERN` (e.g.
`^[A-Za-z0-9-]{1,36}$` for UUID-style keys): every id (all five fields) must then match both.
"""
from __future__ import annotations

import re
from typing import Literal

IdReason = Literal["personal_data", "invalid_id"]   # dead-letter reasons (schemas/outputs.py)

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
_ID = re.compile(ID_PATTERN)

# An e-mail address anywhere in the value (local@domain.tld).
EMAIL_SHAPE = re.compile(r"[^\s@]+@[^\s@]+\.[A-Za-z]{2,}")
# Phone numbers anywhere in the value: international (+44 20 7946 0958, +4915112345678),
# an area code in parentheses ((555) 010-4477), the North American 3-3-4 groups split by
# - . or space (555-010-9999), or 2-4 / 3-4 / 3-4 digit groups split by . or space
# (030.1234.5678). Groups split by `-` are matched in the 3-3-4 form only: a UUID
# (8-4-4-4-12 hex) often has three all-digit groups of four and must stay an id. The
# digit-group alternatives are also in the exported JSON Schema (a `not` pattern), since
# the id pattern's character set admits them.
PHONE_GROUPS = (r"(?<![0-9A-Za-z])(?:[0-9]{3}[-. ][0-9]{3}[-. ][0-9]{4}|[0-9]{2,4}[. ][0-9]{3,4}[. ][0-9]{3,4})"
                r"(?![0-9A-Za-z])")
PHONE_SHAPE = re.compile(r"\+\s*[0-9][0-9 ().-]{5,}[0-9]|\(\s*[0-9]{2,5}\s*\)\s*[0-9]|" + PHONE_GROUPS)

_PHONE_GROUPS = re.compile(PHONE_GROUPS)
_PHONE_MESSAGE = "looks like it contains a phone number (ids must be pseudonymous)"

PERSONAL_DATA: IdReason = "personal_data"
INVALID_ID: IdReason = "invalid_id"


def id_problem(value: str, narrower: re.Pattern[str] | None = None) -> tuple[IdReason, str] | None:
    """(dead-letter reason, message) when `value` is not an acceptable id; None when it is.
    The message never contains the value."""
    if _ID.fullmatch(value):
        # The same answer as the checks below, faster (every id of every event comes here):
        # the pattern's characters hold no `@` (no e-mail shape), no `+` or `(` (no
        # international or area-code phone shape) and no space, so of the personal-data
        # shapes only the digit groups split by `-` or `.` can be in it.
        if _PHONE_GROUPS.search(value):
            return PERSONAL_DATA, _PHONE_MESSAGE
        if narrower is not None and not narrower.fullmatch(value):
            return INVALID_ID, f"must match the configured id pattern {narrower.pattern}"
        return None
    if EMAIL_SHAPE.search(value):
        return PERSONAL_DATA, "looks like it contains an e-mail address (ids must be pseudonymous)"
    if PHONE_SHAPE.search(value):
        return PERSONAL_DATA, _PHONE_MESSAGE
    if not _ID.fullmatch(value):
        return INVALID_ID, f"must match {ID_PATTERN} (ASCII letters, digits and . _ : -; " \
                           f"no whitespace, control, bidi or other non-ASCII characters)"
    if narrower is not None and not narrower.fullmatch(value):
        return INVALID_ID, f"must match the configured id pattern {narrower.pattern}"
    return None
