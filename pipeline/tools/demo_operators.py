"""The service-recovery loop of `cxpulse demo`: an operator team that works the case queue
the pipeline built, and the uplift of the generator's operators.

The demo's stream is causal (pipeline.tools.causal_stream) with the generator's operators
(pipeline.tools.operators): a call within a day after a customer's risk rises cuts the
leaving hazard by a stated share, half of the cases are a control group nobody calls. What
that planted effect is, and what the stream shows of it, is `generated_uplift` (the figures
of `cxpulse evaluate --uplift` on the same stream).

`case_actions` is the team's stated policy on the pipeline's own alerts, once the backfill
is caught up: every case whose alert still fires is acknowledged by a staff member (a
pseudonymous code from the alert id); churn-risk cases in the control group are closed
without contact (playbook action `none`); every other case gets a call (`contacted`,
call_center) and is closed with `callback`. The outcome is the customer's as the generator
knows it: `lost` when the customer left, else `retained` (the team cannot know better; the
outcome shares are a picture of the queue, the uplift is measured on the generator's cases).
Actions are stamped `now` (the team works the queue when the backfill is done) and keyed by
customer like `cxpulse ack`/`close` write them. Pure: no Kafka, no clock.
"""
from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Iterable, Mapping

import orjson

from pipeline.tools.case_actions import build_action
from pipeline.tools.generator import GeneratedStream
from pipeline.tools.operators import OperatorPolicy

POLICY = OperatorPolicy(control_share=0.5)   # the generator's operators in the demo (evaluate --uplift's defaults)
STAFF = 12                                   # staff codes S001..S012
NO_CASE = ("escalation",)                    # alert types without a case of their own (pipeline/domain/case.py)


def open_alerts(alerts: Iterable[Mapping]) -> list[Mapping]:
    """The alerts whose latest record (in topic order) is `firing`: the open cases' alerts."""
    latest: dict[str, Mapping] = {}
    for a in alerts:
        latest[a["alert_id"]] = a
    return [a for a in latest.values() if a["status"] == "firing" and a["type"] not in NO_CASE]


def staff_of(alert_id: str) -> str:
    n = int.from_bytes(hashlib.blake2b(f"staff|{alert_id}".encode(), digest_size=4).digest(), "big")
    return f"S{n % STAFF + 1:03d}"


def case_actions(alerts: Iterable[Mapping], stream: GeneratedStream, now: datetime) -> list[tuple[bytes, bytes]]:
    """(key, value) of the `cx.actions` records the team sends for the open cases of `alerts`."""
    out: list[tuple[bytes, bytes]] = []
    for a in open_alerts(alerts):
        aid, cid = a["alert_id"], a["customer_id"]
        staff = staff_of(aid)
        truth = stream.truth.get(cid)
        outcome = "lost" if truth is not None and truth.churned else "retained"
        steps: list[dict] = [{"action": "acknowledged"}]
        if a.get("control"):
            steps.append({"action": "closed", "outcome": outcome, "playbook_action": "none"})
        else:
            steps.append({"action": "contacted", "channel": "call_center"})
            steps.append({"action": "closed", "outcome": outcome, "playbook_action": "callback"})
        for i, step in enumerate(steps):
            record = build_action(aid, cid, step["action"], staff, channel=step.get("channel"),
                                  outcome=step.get("outcome"), playbook_action=step.get("playbook_action"),
                                  now=now, action_id=f"demo-{aid}-{i}")
            out.append((cid.encode(), record.model_dump_json(exclude_none=True).encode()))
    return out


def generated_uplift(stream: GeneratedStream, policy: OperatorPolicy = POLICY, seed: int = 7) -> dict:
    """The generator's operators: cases with a full outcome window, the planted churn uplift and
    the measured one (control − treated share that left within the horizon) with its 95 % interval."""
    from pipeline.domain.uplift import uplift_by_action
    from pipeline.tools.uplift_evaluate import generated_cases

    if stream.causal is None:
        raise ValueError("the generator's operators act in causal mode only")
    cases, planted = generated_cases(stream.causal, policy.horizon_days)
    row = uplift_by_action(cases, resamples=500, seed=seed)[-1]
    return {"cases": len(cases), "treated": row["treated"], "control": row["control"], "planted": planted,
            "measured": row["churn_uplift"], "ci": row.get("churn_uplift_ci"), "effect": policy.effect,
            "effect_days": policy.effect_days, "control_share": policy.control_share}


def decode(values: Iterable[bytes | None]) -> list[dict]:
    return [orjson.loads(v) for v in values if v is not None]
