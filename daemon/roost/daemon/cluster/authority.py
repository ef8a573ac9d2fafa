"""What a peer may say about an execution: the ownership rules every Peer call is held to.

An execution has one owner at one epoch, and only a handover that its owner starts moves it
(`handover`). So whatever a peer sends must follow from what this daemon knows:

- nobody pushes, prepares or commits an execution this daemon owns or runs (it gives it away
  itself, by its own handover: `Supervisor.give_up`);
- a push comes from the execution's owner, which is the caller itself (`Caller.must_be`); it
  names the same execution in its header and its record, never this daemon's node id, and an
  epoch no older than the one known — equal for the owner known, newer (by at most
  MAX_EPOCH_STEP) for a new owner whose handover this daemon did not see;
- a handover is prepared by the execution's owner for the next epoch, committed or aborted
  only by the source that prepared it;
- an address a peer sends is where that peer itself serves (HOST:PORT, bounded).

A later issue puts ownership on etcd; these rules are what a hostile caller meets until then.
"""
from __future__ import annotations

from roost.daemon.cluster.peerauth import Caller
from roost.daemon.errors import InvalidRequest, NotFound, StateConflict
from roost.daemon.service.fields import short
from roost.daemon.store.records import ExecutionRecord, Owner
from roost.v1 import peer_pb2 as pb

MAX_EPOCH = 1 << 53          # far past any count of handovers; epoch + 1 stays exact everywhere
MAX_EPOCH_STEP = 1 << 10     # a push may move a known execution's epoch this far ahead at once
MAX_ID = 64                  # execution ids are 12 hex digits; names in messages are bounded
MAX_NODE = 253
MAX_ADDRESS = 300


class Ownership:
    """The rules above for one daemon (`me`); `owned(record)`/`runs(id)` say what it owns and
    runs now."""

    def __init__(self, me: str, owned, runs) -> None:
        self.me, self._owned, self._runs = me, owned, runs

    # ---- pushes ----
    def check_push(self, caller: Caller, header: pb.CheckpointHeader,
                   local: ExecutionRecord | None) -> None:
        """A push's header against the caller and what this daemon knows."""
        what = f"push of {short(header.id)}"
        check_id(header.id, what)
        check_node(header.owner, f"{what}: owner")
        check_address(header.source_address, f"{what}: source address")
        caller.must_be(header.owner, what)
        if header.owner == self.me:
            raise StateConflict(f"{what}: names this daemon's own node id {self.me!r} as its "
                                "owner (two daemons share one node id?)")
        check_epoch(header.epoch, what)
        if header.prepare_epoch and header.prepare_epoch != header.epoch + 1:
            raise StateConflict(f"{what}: prepares epoch {header.prepare_epoch}, not the next "
                                f"one ({header.epoch + 1})")
        if local is None:
            return
        if header.epoch < local.epoch:
            raise StateConflict(f"{what} at epoch {header.epoch}: stale, this daemon knows epoch "
                                f"{local.epoch} (owner {local.owner})")
        self.not_mine(what, local)
        if header.epoch == local.epoch and header.owner != local.owner:
            raise StateConflict(f"{what}: {short(header.owner)} claims epoch {header.epoch}, "
                                f"which is {local.owner}'s")
        if header.epoch > local.epoch + MAX_EPOCH_STEP:
            raise StateConflict(f"{what}: epoch {header.epoch} does not follow from {local.epoch}")

    @staticmethod
    def check_record(header: pb.CheckpointHeader, pushed: ExecutionRecord,
                     local: ExecutionRecord | None) -> None:
        """The record a push carries is of the execution its header names (and module)."""
        what = f"push of {header.id}"
        if pushed.id != header.id:
            raise InvalidRequest(f"{what}: its record is of execution {short(pushed.id)!r}")
        if local is not None and pushed.module_sha256 != local.module_sha256:
            raise InvalidRequest(f"{what}: its record names another module than the one known")

    def not_mine(self, what: str, local: ExecutionRecord) -> None:
        """Refuse a peer's word on an execution this daemon owns or runs."""
        if self._owned(local) or self._runs(local.id):
            raise StateConflict(f"{what}: this daemon owns and runs it (epoch {local.epoch}); "
                                "only its own handover gives it away")

    # ---- handovers ----
    def check_prepare(self, caller: Caller, request: pb.HandoverRequest,
                      local: ExecutionRecord) -> None:
        """PREPARE comes from the execution's owner, for the next epoch."""
        what = f"handover of {local.id}"
        caller.must_be(request.source, what)
        check_address(request.source_address, f"{what}: source address")
        self.not_mine(what, local)
        if request.source != local.owner:
            raise StateConflict(f"{what}: {short(request.source)!r} is not its owner "
                                f"({local.owner} at epoch {local.epoch})")
        if request.epoch != local.epoch + 1 and prepared_epoch(local) != request.epoch:
            raise StateConflict(f"{what} at epoch {request.epoch}: this daemon knows epoch "
                                f"{local.epoch}, so the next is {local.epoch + 1}")

    def check_decider(self, caller: Caller, request: pb.HandoverRequest,
                      local: ExecutionRecord) -> None:
        """COMMIT and ABORT come from the source that prepared the handover (an ABORT of a
        migration not prepared yet, from the owner migrating it)."""
        what = f"handover of {local.id}"
        caller.must_be(request.source, what)
        self.not_mine(what, local)
        source = prepared_source(local) if local.prepared else local.owner
        if request.source != source:
            raise StateConflict(f"{what}: only {source!r}, its source, decides it")


def prepared_epoch(record: ExecutionRecord) -> int:
    """The epoch a prepared handover is for (0: none)."""
    return Owner.epoch_of(record.prepared)


def prepared_source(record: ExecutionRecord) -> str:
    source = Owner.parse(record.prepared)
    return source.node if source is not None else ""


def check_id(exec_id: str, what: str) -> None:
    if not exec_id or len(exec_id) > MAX_ID:
        raise InvalidRequest(f"{what}: an execution id of 1 to {MAX_ID} characters is required")


def check_node(node: str, what: str) -> None:
    if not node or len(node) > MAX_NODE or any(c.isspace() for c in node):
        raise InvalidRequest(f"{what}: a node id of 1 to {MAX_NODE} characters, no spaces, "
                             "is required")


def check_address(address: str, what: str) -> None:
    """HOST:PORT with a port number (a peer's own address)."""
    host, sep, port = address.rpartition(":")
    if (not sep or not host or len(address) > MAX_ADDRESS or not port.isdigit()
            or not 0 < int(port) < 65536 or any(c.isspace() for c in address)):
        raise InvalidRequest(f"{what}: {short(address)!r} is not HOST:PORT")


def check_epoch(epoch: int, what: str) -> None:
    if not 1 <= epoch <= MAX_EPOCH:
        raise InvalidRequest(f"{what}: epoch {epoch} is out of range (1 to 2^53)")


def known(store, exec_id: str) -> ExecutionRecord | None:
    try:
        return store.get_execution(exec_id)
    except NotFound:
        return None
