"""Who this daemon is to its peers: its node id and the address it advertises.

Cluster code (replication, migration, handover) names this daemon in what it sends — the
owner of a push, the source of a handover — and decides what it owns by it. It is fixed for
the daemon's life (`main` works it out once, from flags, the TLS certificate or the data dir),
so it is handed to each cluster object when it is made rather than read off the supervisor.
"""
from __future__ import annotations

from dataclasses import dataclass

from roost.daemon.store.records import ExecutionRecord


@dataclass(frozen=True)
class NodeIdentity:
    node_id: str
    address: str = ""          # HOST:PORT peers and clients reach this daemon at ("": none)

    def owns(self, record: ExecutionRecord) -> bool:
        """This daemon is `record`'s owner (nobody else may run it); the same rule as
        `Supervisor.owns`: a record naming no owner is this daemon's."""
        return record.owner in ("", self.node_id)
