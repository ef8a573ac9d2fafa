"""The operator's cluster commands, put together on the client from one daemon's view of its
members (ListNodes): `ps --all-nodes`, `run --place`, node ids wherever an address goes, and
`drain`.

Nothing here needs a daemon of its own: each member answers only for the executions it owns
(ListExecutions), moves one when asked (Migrate), and the CLI asks every member and joins the
answers. A member that cannot be asked is named on stderr, never a traceback.
"""
from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from roost.client import display, times
from roost.client.api import Client
from roost.client.errors import LocalError, RoostClientError
from roost.v1 import control_pb2 as pb

AUTO = "auto"
MEMBER_TIMEOUT_SECONDS = 10.0     # one member's ListExecutions: a dead host must not hang `ps`
Warn = Callable[[str], None]


# ---- members: by node id or address ----

def is_address(value: str) -> bool:
    """HOST:PORT (a numeric port after the last ':'): used as given, no ListNodes needed."""
    host, sep, port = value.rpartition(":")
    return bool(sep and host and port.isdigit())


def find_node(nodes: list[pb.Node], value: str) -> pb.Node | None:
    """The member named `value`: by node id first, else by address."""
    return next((n for n in nodes if n.node_id == value), None) or \
        next((n for n in nodes if n.address and n.address == value), None)


def named(nodes: list[pb.Node], value: str) -> pb.Node:
    """The member named `value`, or a one-line error listing the members there are."""
    node = find_node(nodes, value)
    if node is None:
        known = ", ".join(n.node_id for n in nodes) or "none"
        raise LocalError(f"unknown node {value!r} (members: {known})")
    return node


def address_of(client: Client, value: str) -> str:
    """A `--to` value as the address Migrate takes: HOST:PORT as given, else a node id looked
    up in the members of the daemon asked."""
    if is_address(value):
        return value
    node = named(client.nodes(), value)
    if not node.address:
        raise LocalError(f"node {node.node_id} has no address")
    return node.address


@contextlib.contextmanager
def client_of(client: Client, node: pb.Node) -> Iterator[Client]:
    """The client of a member: the one given for the daemon that answered ListNodes (it may
    be on a Unix socket), else a new one at the member's address, closed after use."""
    if node.self:
        yield client
        return
    with client.at(node.address) as other:
        yield other


def least_loaded(nodes: list[pb.Node], assigned: Counter[str] | None = None) -> pb.Node:
    """The healthy member with the fewest executions (counting `assigned`, those placed there
    since the members were listed), then the lowest load; ties by node id."""
    assigned = assigned or Counter()
    healthy = [n for n in nodes if n.healthy and (n.address or n.self)]
    if not healthy:
        raise LocalError("no healthy member to place it on")
    return min(healthy, key=lambda n: (n.executions + assigned[n.node_id], n.load, n.node_id))


def placed(client: Client, place: str) -> tuple[Client, pb.Node | None]:
    """The client of the member `run --place` asks for: `auto` (the least loaded), a node id,
    or HOST:PORT as given (its node then unknown: None)."""
    if is_address(place):
        return client.at(place), None
    nodes = client.nodes()
    node = least_loaded(nodes) if place == AUTO else named(nodes, place)
    if not node.healthy:
        raise LocalError(f"node {node.node_id} is down")
    return (client if node.self else client.at(node.address)), node


# ---- ps --all-nodes ----

def _listing(client: Client, node: pb.Node, all: bool) -> list[pb.Execution] | RoostClientError:
    try:
        with client_of(client, node) as member:
            return member.list(all=all, timeout=MEMBER_TIMEOUT_SECONDS)
    except RoostClientError as err:
        return err


def list_everywhere(client: Client, all: bool, warn: Warn) -> list[pb.Execution]:
    """Every member's executions, each once, from the member that owns it (`owner` set to it):
    a member still listing a replica, or one that moved away, is not where it runs. A member
    that is down or does not answer is skipped with a warning."""
    nodes = [n for n in client.nodes() if n.address or n.self]
    up = [n for n in nodes if n.healthy]
    for n in nodes:
        if not n.healthy:
            warn(f"node {n.node_id} at {n.address or '?'} is down: its executions are not listed")
    with ThreadPoolExecutor(max_workers=max(1, min(16, len(up)))) as pool:
        answers = list(pool.map(lambda n: _listing(client, n, all), up))
    found: dict[str, pb.Execution] = {}
    for node, answer in zip(up, answers):
        if isinstance(answer, RoostClientError):
            warn(f"node {node.node_id} at {node.address} did not answer ({answer.message}): "
                 f"its executions are not listed")
            continue
        for e in answer:
            if (e.owner or node.node_id) != node.node_id:
                continue
            e.owner = node.node_id
            kept = found.get(e.id)
            if kept is None or e.epoch > kept.epoch:        # mid-handover: the newer owner
                found[e.id] = e
    return sorted(found.values(), key=lambda e: (times.unix_seconds(e.create_time), e.id))


# ---- drain ----

@dataclass
class Moved:
    """What became of one execution of a drained node."""

    id: str
    name: str
    outcome: str = "migrated"          # migrated | failed | ended (before it could move)
    to: str = ""                       # the target's node id
    address: str = ""
    error: str = ""
    report: pb.MigrateReport | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "name": self.name, "outcome": self.outcome,
                               "to": self.to, "address": self.address, "error": self.error}
        out["downtime_seconds"] = times.seconds_of(self.report.downtime) if self.report else None
        out["report"] = display.message_dict(self.report) if self.report else None
        return out

    def line(self) -> str:
        """The report's line for this execution."""
        who = f"{self.id} ({self.name})" if self.name else self.id
        if self.outcome == "ended":
            return f"{who}: ended before it could move"
        if self.outcome == "failed":
            return f"{who}: FAILED to move to {self.to} ({self.address}): {self.error}"
        seconds = times.seconds_of(self.report.downtime) if self.report else 0.0
        downtime = f", downtime {seconds * 1000:.1f}ms" if seconds else ""
        return f"{who} -> {self.to} ({self.address}){downtime}"


@dataclass
class Drained:
    """`roost drain`'s report."""

    node: str
    moved: list[Moved] = field(default_factory=list)

    @property
    def failed(self) -> list[Moved]:
        return [m for m in self.moved if m.outcome == "failed"]

    def as_dict(self) -> dict[str, Any]:
        return {"node": self.node, "executions": [m.as_dict() for m in self.moved],
                "migrated": sum(m.outcome == "migrated" for m in self.moved),
                "failed": len(self.failed)}

    def lines(self) -> list[str]:
        if not self.moved:
            return [f"node {self.node} owns no running executions: nothing to drain"]
        migrated = sum(m.outcome == "migrated" for m in self.moved)
        return [*(m.line() for m in self.moved),
                f"drained {self.node}: {migrated} moved, {len(self.failed)} failed"]


def drain(client: Client, value: str, progress: Warn | None = None) -> Drained:
    """Moves every execution NODE owns and runs (not ended) to the other healthy members,
    one at a time, each to the least loaded (counting those this drain sent there), live
    (a sleeping or paused one moves as it is)."""
    nodes = client.nodes()
    node = named(nodes, value)
    targets = [n for n in nodes if n.healthy and n.address and n.node_id != node.node_id]
    if not targets:
        raise LocalError(f"no other healthy member to drain {node.node_id} to")
    report = Drained(node.node_id)
    assigned: Counter[str] = Counter()
    with client_of(client, node) as source:
        for e in _owned_running(source, node):
            target = least_loaded(targets, assigned)
            assigned[target.node_id] += 1
            if progress:
                progress(f"moving {e.id} to {target.node_id} ({target.address})")
            report.moved.append(_move(source, e, target))
    return report


def _owned_running(source: Client, node: pb.Node) -> list[pb.Execution]:
    """The executions the drained node owns that have not ended, oldest first."""
    try:
        listed = source.list(timeout=MEMBER_TIMEOUT_SECONDS)
    except RoostClientError as err:
        raise LocalError(f"node {node.node_id} at {node.address} did not answer: "
                         f"{err.message}") from None
    return [e for e in listed if (e.owner or node.node_id) == node.node_id
            and e.state not in display.ENDED_STATES]


def _move(source: Client, e: pb.Execution, target: pb.Node) -> Moved:
    """One Migrate (as `roost migrate` does), its report kept; a failure is named, and an
    execution that ended meanwhile is not one."""
    moved = Moved(e.id, e.name, to=target.node_id, address=target.address)
    try:
        for p in source.migrate(e.id, target.address):
            if p.HasField("report"):
                moved.report = p.report
    except RoostClientError as err:
        moved.outcome, moved.error = "failed", err.message
        with contextlib.suppress(RoostClientError):
            now = source.get(e.id)
            if now.state in display.ENDED_STATES and now.owner in ("", now.served_by):
                moved.outcome = "ended"
        return moved
    if moved.report is None:
        moved.outcome, moved.error = "failed", "the daemon sent no report"
    return moved
