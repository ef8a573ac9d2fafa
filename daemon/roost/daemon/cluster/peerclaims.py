"""Claiming an execution without etcd: before a worker runs it, ask the configured peers.

With static peers there is no lease to expire and no owner key: an execution moves only by
its owner's own handover, or by the operator's `roost recover ID --on NODE` when its owner is
gone for good — which runs the replica there at the next epoch. The old owner may come back
(its disk survived); before it runs the execution again it asks its peers, and one that knows
a newer epoch (or another owner at the same one) makes it drop its copy (`Superseded`). A peer
that does not answer says nothing: plaintext static clusters are for hosts the operator
watches (README).
"""
from __future__ import annotations

import logging
from collections.abc import Callable

from roost.daemon.cluster.peers import PeerClient
from roost.daemon.errors import PeerError, StateConflict, Superseded
from roost.daemon.store.records import ExecutionRecord

log = logging.getLogger(__name__)


class PeerClaims:
    def __init__(self, peers: Callable[[], list[PeerClient]], me: str) -> None:
        self.peers, self.me = peers, me

    def claim(self, record: ExecutionRecord) -> None:
        """Superseded when a peer knows `record`'s execution at a newer epoch, or owned by
        another at this one."""
        for client in self.peers():
            try:
                status = client.status(record.id, timeout=2.0)
            except (PeerError, StateConflict) as e:
                log.debug("claiming %s: %s", record.id, e)
                continue
            if not status.found:
                continue
            if status.epoch > record.epoch or (status.epoch == record.epoch
                                               and status.owner not in ("", self.me, record.owner)):
                raise Superseded(status.owner, status.owner_address, status.epoch)
