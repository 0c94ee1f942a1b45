"""SERVQUAL evidence: which signal feeds which dimension, with what score and weight.

This is the one place in code for the mapping documented in README.md ("How scores are
made"). Every signal yields (dimension, score 0..100, weight). A dimension's score is the
time-decayed, weight-averaged score of its evidence; a dimension with no evidence is null.
"""
from __future__ import annotations

from pipeline.domain.vocabulary import DIMENSIONS
from schemas.events import Complaint, Order, Touchpoint

Evidence = tuple[str, float, float]  # (dimension, score 0..100, weight)

# --- weights (one table) --------------------------------------------------------------
W_RATING = 1.0            # explicit SERVQUAL rating, any dimension
W_FCR = 0.6               # first-contact resolution (resolved true/false) -> reliability
W_WAIT = 0.6              # wait_seconds -> responsiveness
W_HANDOFFS = 0.4          # handoffs -> empathy
W_SENTIMENT = 0.5         # sentiment -> empathy
W_REPEAT = 0.5            # repeat contact within REPEAT_WINDOW -> empathy
W_FULFIL = 0.8            # on-time / late fulfilment -> reliability
W_CANCEL = 0.4            # cancellation -> reliability
W_REFUND = 0.6            # refund / return -> reliability
W_COMPLAINT_SEVERITY = {"low": 0.5, "medium": 1.0, "high": 1.5, "critical": 2.0}  # complaint -> its category
ASSURANCE_SCORE_BY_SEVERITY = {"low": 60.0, "medium": 40.0, "high": 20.0, "critical": 0.0}
W_COMPLAINT_ASSURANCE = 0.5   # any complaint -> assurance, scored by severity
W_ESCALATION = 1.0            # escalation -> assurance 0
W_ACK_TIME = 0.8              # time to acknowledge -> responsiveness
W_RESOLVE_TIME = 0.8          # time to resolve -> responsiveness
W_RECOVERY = 1.0              # recovery outcome -> the complaint's category (and assurance at half)
W_BREACH = 1.0                # unanswered complaint past its deadline -> responsiveness 0

# --- scales (half-score points) -----------------------------------------------------------
WAIT_HALF_SECONDS = 120.0       # a 2-minute wait scores 50
LATE_HALF_HOURS = 24.0          # a delivery one day late scores 50
ACK_HALF_HOURS = 4.0            # acknowledged after 4 hours scores 50
RESOLVE_HALF_HOURS = 48.0       # resolved after 2 days scores 50
HANDOFF_FACTOR = 0.6            # each handoff multiplies the empathy score by this
REPEAT_WINDOW_SECONDS = 72 * 3600  # a support/inquiry contact within 72 h of another is a repeat


def halving(value: float, half: float) -> float:
    """100 at zero, 50 at `half`, halving again every `half`."""
    return 100.0 * 0.5 ** (max(0.0, value) / half)


def rating_score(r: int) -> float:
    return (r - 1) * 25.0


def touchpoint_evidence(ev: Touchpoint) -> list[Evidence]:
    out: list[Evidence] = []
    if ev.ratings is not None:
        for dim in DIMENSIONS:
            r = getattr(ev.ratings, dim)
            if r is not None:
                out.append((dim, rating_score(r), W_RATING))
    if ev.resolved is not None:
        out.append(("reliability", 100.0 if ev.resolved else 0.0, W_FCR))
    if ev.wait_seconds is not None:
        out.append(("responsiveness", halving(ev.wait_seconds, WAIT_HALF_SECONDS), W_WAIT))
    if ev.handoffs is not None:
        out.append(("empathy", 100.0 * HANDOFF_FACTOR ** ev.handoffs, W_HANDOFFS))
    if ev.sentiment is not None:
        out.append(("empathy", (ev.sentiment + 1.0) * 50.0, W_SENTIMENT))
    return out


def repeat_contact_evidence() -> list[Evidence]:
    return [("empathy", 0.0, W_REPEAT)]


def order_evidence(ev: Order) -> list[Evidence]:
    status = ev.status.value
    if status == "cancelled":
        return [("reliability", 30.0, W_CANCEL)]
    if status in ("refunded", "returned"):
        return [("reliability", 20.0 if status == "refunded" else 30.0, W_REFUND)]
    if ev.promised_at is not None and ev.fulfilled_at is not None:
        late_h = (ev.fulfilled_at - ev.promised_at).total_seconds() / 3600.0
        return [("reliability", halving(late_h, LATE_HALF_HOURS), W_FULFIL)]
    return []


def complaint_opened_evidence(category: str, severity: str) -> list[Evidence]:
    out: list[Evidence] = [("assurance", ASSURANCE_SCORE_BY_SEVERITY[severity], W_COMPLAINT_ASSURANCE)]
    if category in DIMENSIONS:
        out.append((category, 0.0, W_COMPLAINT_SEVERITY[severity]))
    return out


def escalation_evidence() -> list[Evidence]:
    return [("assurance", 0.0, W_ESCALATION)]


def ack_time_evidence(hours: float) -> list[Evidence]:
    return [("responsiveness", halving(hours, ACK_HALF_HOURS), W_ACK_TIME)]


def resolve_time_evidence(hours: float) -> list[Evidence]:
    return [("responsiveness", halving(hours, RESOLVE_HALF_HOURS), W_RESOLVE_TIME)]


def recovery_evidence(category: str, success: bool) -> list[Evidence]:
    score = 100.0 if success else 0.0
    dim = category if category in DIMENSIONS else "assurance"
    out: list[Evidence] = [(dim, score, W_RECOVERY)]
    if dim != "assurance":
        out.append(("assurance", score, W_RECOVERY / 2))
    return out


def breach_evidence() -> list[Evidence]:
    return [("responsiveness", 0.0, W_BREACH)]


def is_contact(ev: Touchpoint) -> bool:
    """Contacts that count for repeat-contact (effort) detection."""
    return ev.kind.value in ("support", "inquiry")


def is_low_rating(ev: Touchpoint) -> bool:
    if ev.csat is not None and ev.csat <= 2:
        return True
    return ev.ratings is not None and any(
        (r := getattr(ev.ratings, d)) is not None and r <= 2 for d in DIMENSIONS
    )


__all__ = ["Evidence", "touchpoint_evidence", "order_evidence", "Complaint"]
