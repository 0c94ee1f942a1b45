"""aiokafka 0.14.0: keep the member id on ILLEGAL_GENERATION (as the Java client and kafka-python do).

aiokafka answers an ILLEGAL_GENERATION error on OffsetCommit, Heartbeat or SyncGroup with
`GroupCoordinator.reset_generation()`, which forgets the generation *and the member id*:
the consumer then re-joins as a brand-new member and its old member id stays registered
in the group until the broker expires it. The Java consumer stopped doing that in Kafka
3.2 (KAFKA-13419, apache/kafka#11451) and kafka-python in 2.x (dpkp/kafka-python#3017):
ILLEGAL_GENERATION resets the generation only, and the member re-joins under its own id
(UNKNOWN_MEMBER_ID still resets both).

Why it matters here (docs/fault-tolerance.md, scenario 2): the embedded broker (noida-db
0.2.3) answers an OffsetCommit sent by the current members while another member is
joining with ILLEGAL_GENERATION (Apache Kafka accepts it or answers
REBALANCE_IN_PROGRESS), and it never drops a member that fails to re-join: it keeps the
orphaned member id and names it the group leader. The worker commits every 0.2-1 s, so
when a second worker joins, the first one's commit almost always lands in that window;
with aiokafka's reset both workers then join as followers of the orphaned id, no leader
ever sends the assignment, and SyncGroup fails every session timeout — the group of two
never forms. Keeping the member id, the first worker re-joins as itself and the group
forms within about a second.

`install()` patches aiokafka's `GroupCoordinator` in the current process (idempotent):
the coordinator's `_send_req` notes when a response to OffsetCommit, Heartbeat or
SyncGroup carries ILLEGAL_GENERATION, and `reset_generation()` called while handling that
response (aiokafka calls it synchronously after the await, for each failed partition)
keeps the member id. Any other reset (UNKNOWN_MEMBER_ID, leaving the group, a failed
JoinGroup) is unchanged. Remove once aiokafka keeps the member id itself.
"""
from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("cxpulse.kafka_compat")

ILLEGAL_GENERATION = 22
_MARK = "_cxpulse_keep_member_id"   # member id to keep on the next reset_generation(), or None


def illegal_generation(response: Any) -> bool:
    """True for an OffsetCommit, Heartbeat or SyncGroup response that says ILLEGAL_GENERATION."""
    name = type(response).__name__
    if name.startswith("OffsetCommitResponse"):
        return any(error == ILLEGAL_GENERATION for _topic, parts in response.topics for _p, error in parts)
    if name.startswith(("HeartbeatResponse", "SyncGroupResponse")):
        return response.error_code == ILLEGAL_GENERATION
    return False


def install() -> bool:
    """Patch aiokafka's GroupCoordinator; returns False when it was already patched."""
    from aiokafka.consumer.group_coordinator import GroupCoordinator

    if getattr(GroupCoordinator, "_cxpulse_patched", False):
        return False
    send_req, reset_generation = GroupCoordinator._send_req, GroupCoordinator.reset_generation

    async def _send_req(self, request):
        setattr(self, _MARK, None)
        response = await send_req(self, request)
        if illegal_generation(response) and self.member_id:
            setattr(self, _MARK, self.member_id)
        else:
            setattr(self, _MARK, None)
        return response

    def _reset_generation(self):
        member_id, generation = self.member_id, self.generation
        reset_generation(self)
        if member_id and getattr(self, _MARK, None) == member_id:
            self.member_id = member_id
            if generation >= 0:   # once per response, not per failed partition
                log.info("group %s: generation %d out of date (ILLEGAL_GENERATION); re-joining as member %s",
                         self.group_id, generation, member_id)

    GroupCoordinator._send_req = _send_req
    GroupCoordinator.reset_generation = _reset_generation
    GroupCoordinator._cxpulse_patched = True
    return True
