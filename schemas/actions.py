"""Operator actions on alerts: the `cx.actions` input topic (DESIGN.md section 2).

Key = customer_id (co-partitioned with the customer's state). One record per step of an
alert's case: acknowledged, assigned, contacted, closed. Codes only — a staff id, a channel,
an outcome code and a playbook action code — never free text (it would carry personal data).
Strict like the events: unknown fields, unknown codes and timestamps without an offset are errors.
"""
from __future__ import annotations

from enum import Enum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.events import Channel, Id, SchemaVersion, Timestamp

AlertId = Annotated[str, Field(pattern=r"^[0-9a-f]{20}$", description="the alert's `alert_id` (cx.alerts)")]
StaffId = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$",
                               description="pseudonymous staff code, e.g. S017 (not a name)")]


class CaseAction(str, Enum):
    acknowledged = "acknowledged"   # someone has seen the alert and owns it for now
    assigned = "assigned"           # given to a staff member (staff_id = the assignee)
    contacted = "contacted"         # the customer was contacted (channel required)
    closed = "closed"               # the case ends (outcome and playbook action required)


class Outcome(str, Enum):
    retained = "retained"           # the customer stays
    lost = "lost"                   # the customer left anyway
    unreachable = "unreachable"     # no contact possible
    not_needed = "not_needed"       # nothing to do (false alarm, already fixed)


class PlaybookAction(str, Enum):
    """What was done, as a code of the recovery playbook (README.md, "Alerts and the recovery playbook")."""
    callback = "callback"                   # call the customer back (sunset rule, service-recovery call)
    resolution_date = "resolution_date"     # senior agent gives a resolution date
    compensation = "compensation"           # compensate and follow up
    account_manager = "account_manager"     # an account manager calls
    winback_offer = "winback_offer"         # personal win-back / relevant offer
    close_complaints = "close_complaints"   # close the open complaints and confirm
    single_owner = "single_owner"           # one owner / single point of contact
    delivery_upgrade = "delivery_upgrade"   # apologise and upgrade the next delivery
    touchpoint_review = "touchpoint_review" # review the recent touchpoints and call
    product_fit = "product_fit"             # review product fit
    none = "none"                           # nothing was done


class ActionRecord(BaseModel):
    """One operator action on an alert's case."""
    model_config = ConfigDict(extra="forbid", frozen=True, str_max_length=128)
    type: Literal["action"] = "action"
    schema_version: SchemaVersion
    action_id: Id = Field(description="unique per action; a repeated action_id is a duplicate and ignored")
    alert_id: AlertId
    customer_id: Id
    occurred_at: Timestamp
    action: CaseAction
    staff_id: StaffId
    channel: Channel | None = Field(None, description="how the customer was contacted (required for `contacted`)")
    outcome: Outcome | None = Field(None, description="required for `closed`, not allowed otherwise")
    playbook_action: PlaybookAction | None = Field(None, description="required for `closed`, not allowed otherwise")

    @model_validator(mode="after")
    def _codes_fit_the_action(self) -> "ActionRecord":
        closing = self.action is CaseAction.closed
        if closing and (self.outcome is None or self.playbook_action is None):
            raise ValueError("a `closed` action needs `outcome` and `playbook_action`")
        if not closing and (self.outcome is not None or self.playbook_action is not None):
            raise ValueError(f"`outcome` and `playbook_action` belong to `closed`, not `{self.action.value}`")
        if self.action is CaseAction.contacted and self.channel is None:
            raise ValueError("a `contacted` action needs the `channel`")
        return self


def parse_action(raw: bytes | str) -> ActionRecord:
    """Parse one `cx.actions` record (JSON). Raises pydantic.ValidationError."""
    return ActionRecord.model_validate_json(raw)
