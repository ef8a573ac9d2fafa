"""Membership and ownership on etcd: who is alive, who owns each execution, and taking over
the executions of a daemon that died.

Keys (all under /roost/; values JSON):

    nodes/<node id>        {"address", "load", "executions"}   bound to the node's lease
    known/<exec id>        ""                                  no lease: it exists
    owners/<exec id>       {"node", "address", "epoch"}        bound to its owner's lease
                           {"node", "epoch", "ended": true}    no lease: it ended (kept)
    bids/<exec id>/<node>  {"logs", "journal"}                 a replica bidding to take over

A daemon holds one lease (`cluster.lease_seconds`, default 3) and renews it three times per
TTL. Its node key is created in a transaction that fails when the key exists: a node id held by
a live daemon is refused at start. Each execution it runs has an owner key bound to the same
lease, written whenever a worker starts (`claim`), so when the daemon dies — or is cut off —
its keys vanish one TTL later, and the replica holders see it (`_watch`, a few polls per TTL):
each bids what it holds, the one holding the most output and journal (then the lowest node
id) creates the owner key in a transaction that fails if anyone else did, at the next epoch,
and restores the execution from what it holds (`takeover`).

The epoch in the owner key is the fencing token: it only grows, every ownership change goes
through a transaction on that key, and receivers refuse a lower epoch than the one they know
(`receive`). An owner that could not renew its lease for most of its TTL is `fenced`: it stops
releasing output (`shipping`) and stops its guests (SIGSTOP) until a renewal succeeds; if its
lease expired meanwhile, it claims each execution again and drops — never runs again — those
another daemon took over (`Supervisor.superseded`).
"""
from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import etcd3gw
from etcd3gw import exceptions as etcd_errors

from roost.daemon.errors import InvalidRequest, StateConflict, Superseded, Unavailable
from roost.daemon.store.records import ExecutionRecord

log = logging.getLogger(__name__)
ROOT = "/roost/"
NODES, OWNERS, BIDS = ROOT + "nodes/", ROOT + "owners/", ROOT + "bids/"
KNOWN = ROOT + "known/"         # exec id -> "": it exists (no lease: between an owner's death
#                                 and its takeover, members still know it is somewhere)
BID_SECONDS = 0.15              # how long bidders wait for each other's bids
ETCD_ERRORS = (etcd_errors.Etcd3Exception, OSError, ValueError, KeyError)


@dataclass(frozen=True)
class Member:
    node_id: str
    address: str
    executions: int = 0
    load: float = 0.0


@dataclass(frozen=True)
class OwnerKey:
    node: str
    address: str
    epoch: int
    ended: bool = False
    mod_revision: int = 0


class Etcd:
    """The etcd endpoints (`cluster.etcd`), tried in turn: a thin, typed layer over etcd3gw's
    JSON gateway client."""

    def __init__(self, endpoints: list[str], timeout: float = 2.0) -> None:
        self.clients = [_client(url, timeout) for url in endpoints]
        self._first = 0

    def call(self, what: str, fn: Callable[[Any], Any]) -> Any:
        last: Exception | None = None
        for i in range(len(self.clients)):
            client = self.clients[(self._first + i) % len(self.clients)]
            try:
                out = fn(client)
                self._first = (self._first + i) % len(self.clients)
                return out
            except ETCD_ERRORS as e:
                last = e
        reason = (str(last).strip().splitlines() or [type(last).__name__])[0] if last else "no endpoint"
        raise Unavailable(f"etcd ({what}): {reason}")

    def txn(self, what: str, compare: list, success: list, failure: list | None = None) -> dict:
        return self.call(what, lambda c: c.transaction(
            {"compare": compare, "success": success, "failure": failure or []}))

    def get(self, key: str) -> tuple[bytes, dict] | None:
        found = self.call(f"get {key}", lambda c: c.get(key, metadata=True))
        return found[0] if found else None

    def prefix(self, prefix: str) -> list[tuple[bytes, dict]]:
        return self.call(f"list {prefix}", lambda c: c.get_prefix(prefix))


def _client(url: str, timeout: float):
    scheme, _, rest = url.partition("://")
    if not rest:
        scheme, rest = "http", url
    host, _, port = rest.rstrip("/").rpartition(":")
    if not host or not port.isdigit():
        raise InvalidRequest(f"cluster.etcd: {url!r} is not http://HOST:PORT")
    return etcd3gw.client(host=host, port=int(port), protocol=scheme, timeout=timeout,
                          api_path="/v3/")


def b64(value: str | bytes) -> str:
    import base64
    return base64.b64encode(value.encode() if isinstance(value, str) else value).decode()


def put(key: str, value: dict, lease: int | None) -> dict:
    request: dict[str, Any] = {"key": b64(key), "value": b64(json.dumps(value, sort_keys=True))}
    if lease:
        request["lease"] = lease
    return {"request_put": request}


def absent(key: str) -> dict:
    return {"key": b64(key), "result": "EQUAL", "target": "CREATE", "create_revision": 0}


def unchanged(key: str, mod_revision: int) -> dict:
    return {"key": b64(key), "result": "EQUAL", "target": "MOD", "mod_revision": mod_revision}


class Membership:
    """This daemon's lease, its node key and the owner keys of its executions."""

    def __init__(self, etcd: Etcd, node_id: str, address: str, lease_seconds: int,
                 lease_file: Path | None = None) -> None:
        self.etcd, self.node_id, self.address = etcd, node_id, address
        self.lease_file = lease_file      # the lease this data dir's daemon held last
        self.ttl = max(1, int(lease_seconds))
        self.lease = 0
        self.renewed_at = 0.0             # monotonic: when the last successful renewal was sent
        self.lost = False                 # the lease expired: every owner key must be claimed again
        self._stopped = threading.Event()
        self._members: dict[str, Member] = {}
        self.on_fence: Callable[[bool], None] = lambda fenced: None   # guests stop / go on
        self.on_lost: Callable[[], None] = lambda: None               # claim everything again
        self.load: Callable[[], tuple[int, float]] = lambda: (0, 0.0)
        self._fenced = False
        self._fence_lock = threading.Lock()

    # ---- joining ----
    def join(self) -> None:
        """Take a lease — the one this data dir's daemon held last, if it is still alive (a
        restart within the TTL: its owner keys stay bound, nothing is taken over) — and
        register this node; InvalidRequest when another live daemon holds its id."""
        began = time.monotonic()
        self.lease = self._previous_lease()
        if not self.lease:
            granted = self.etcd.call("lease grant", lambda c: c.post(
                c.get_url("/lease/grant"), json={"TTL": self.ttl, "ID": 0}))
            self.lease = int(granted["ID"])
        self.renewed_at = began
        key = NODES + self.node_id
        held = self.etcd.get(key)
        ours = held is not None and int(held[1].get("lease", 0) or 0) == self.lease
        compare = [unchanged(key, int(held[1].get("mod_revision", 0)))] if ours and held \
            else [absent(key)]
        done = self.etcd.txn("register", compare, [put(key, self._node_value(), self.lease)])
        if not done.get("succeeded"):
            held = self.etcd.get(key)
            where = json.loads(held[0]).get("address", "?") if held else "?"
            raise InvalidRequest(f"node id {self.node_id!r} is held by a live daemon at {where} "
                                 "(its etcd lease): give this daemon another --node-id")
        if self.lease_file is not None:
            self.lease_file.write_text(f"{self.lease}\n")
        self.refresh_members()
        threading.Thread(target=self._keep_alive, name="etcd-lease", daemon=True).start()
        threading.Thread(target=self._watch_fence, name="etcd-fence", daemon=True).start()

    def _watch_fence(self) -> None:
        """Fencing on time even while a renewal hangs on an unreachable etcd."""
        while not self._stopped.wait(0.05):
            self._check_fence()

    def _previous_lease(self) -> int:
        """The lease this data dir's last daemon held, if etcd still keeps it alive."""
        try:
            lease = int(self.lease_file.read_text()) if self.lease_file is not None else 0
        except (OSError, ValueError):
            return 0
        if not lease:
            return 0
        try:
            ttl = self.etcd.call("lease keepalive", lambda c: int(c.post(
                c.get_url("/lease/keepalive"), json={"ID": lease})["result"].get("TTL", -1)))
        except (Unavailable, KeyError):
            return 0
        return lease if ttl > 0 else 0

    def leave(self) -> None:
        """Stopping cleanly: the lease goes, and with it this node's keys — but an owner key
        of an execution this daemon stopped for a restart must not make its replicas take over:
        they are written again without a lease, and claimed back at the next start."""
        self._stopped.set()
        self._revoke()

    def _revoke(self) -> None:
        try:
            self.etcd.call("lease revoke", lambda c: c.post(c.get_url("/kv/lease/revoke"),
                                                            json={"ID": self.lease}))
        except Unavailable as e:
            log.warning("leaving the cluster: %s", e)

    def _node_value(self) -> dict:
        executions, load = self.load()
        return {"address": self.address, "executions": executions, "load": load}

    # ---- the lease ----
    def _keep_alive(self) -> None:
        period = self.ttl / 3
        while not self._stopped.wait(period if not self._fenced else 0.2):
            sent = time.monotonic()
            try:
                ttl = self.etcd.call("lease keepalive", lambda c: int(c.post(
                    c.get_url("/lease/keepalive"), json={"ID": self.lease})["result"].get("TTL", -1)))
            except Unavailable as e:
                log.warning("cannot renew this daemon's etcd lease: %s", e)
                self._check_fence()
                continue
            if ttl <= 0:
                self._relapse()
                continue
            self.renewed_at = sent
            self._publish()
            if self.lost:
                self.on_lost()            # (still fenced meanwhile: nothing runs or releases)
                self.lost = False
            self._check_fence()

    def _relapse(self) -> None:
        """The lease expired (cut off for longer than its TTL): a new one, and every owner key
        claimed again (those another daemon took meanwhile are dropped)."""
        log.error("this daemon's etcd lease expired: its executions may have been taken over")
        try:
            granted = self.etcd.call("lease grant", lambda c: c.post(
                c.get_url("/lease/grant"), json={"TTL": self.ttl, "ID": 0}))
            self.lease = int(granted["ID"])
            self.etcd.txn("register", [], [put(NODES + self.node_id, self._node_value(), self.lease)])
            self.lost = True
        except Unavailable as e:
            log.warning("%s", e)

    def fenced(self) -> bool:
        """True when this daemon cannot vouch for its lease: it may have expired at etcd before
        the next renewal could tell (a margin of a third of the TTL is kept)."""
        return self.lost or time.monotonic() - self.renewed_at > self.ttl * 2 / 3

    def _check_fence(self) -> None:
        with self._fence_lock:
            fenced = self.fenced()
            if fenced == self._fenced:
                return
            self._fenced = fenced
            log.warning("etcd lease %s: %s", "unconfirmed" if fenced else "renewed",
                        "guests stopped, output held" if fenced else "guests go on")
            self.on_fence(fenced)

    def _publish(self) -> None:
        try:
            self.etcd.txn("publish load", [], [put(NODES + self.node_id, self._node_value(),
                                                   self.lease)])
            self.refresh_members()
        except Unavailable:
            pass

    # ---- members ----
    def refresh_members(self) -> dict[str, Member]:
        members = {}
        for value, meta in self.etcd.prefix(NODES):
            node = meta["key"].decode()[len(NODES):] if isinstance(meta["key"], bytes) \
                else str(meta["key"])[len(NODES):]
            try:
                v = json.loads(value)
                members[node] = Member(node, str(v["address"]), int(v.get("executions", 0)),
                                       float(v.get("load", 0.0)))
            except (ValueError, KeyError, TypeError):
                log.warning("etcd: node key %s does not parse", node)
        self._members = members
        return members

    def members(self) -> dict[str, Member]:
        return dict(self._members)

    def is_member(self, node_id: str) -> bool:
        """`node_id` holds a live lease (etcd is asked again when it is not known here)."""
        if node_id in self._members:
            return True
        try:
            return node_id in self.refresh_members()
        except Unavailable:
            return False

    def replica_nodes(self, exec_id: str, factor: int) -> list[Member]:
        """The live members that hold `exec_id`'s replicas: `factor` of the others, chosen by
        rendezvous hashing (stable while membership is)."""
        import hashlib
        others = [m for n, m in self._members.items() if n != self.node_id]
        ranked = sorted(others, key=lambda m: hashlib.sha256(f"{exec_id}/{m.node_id}".encode()).digest())
        return ranked if factor < 0 else ranked[:factor]

    # ---- ownership ----
    def owner(self, exec_id: str) -> OwnerKey | None:
        found = self.etcd.get(OWNERS + exec_id)
        return _owner_key(found) if found else None

    def known(self, exec_id: str) -> bool:
        """The execution was claimed once (it exists somewhere in the cluster)."""
        return self.etcd.get(KNOWN + exec_id) is not None

    def claim(self, record: ExecutionRecord) -> None:
        """This daemon runs `record` at its epoch: its owner key says so, bound to this lease.
        Superseded (naming the owner) when another daemon took it over or it ended."""
        key = OWNERS + record.id
        value = {"node": self.node_id, "address": self.address, "epoch": record.epoch}
        for _ in range(5):
            current = self.owner(record.id)
            if current is None:
                done = self.etcd.txn("claim", [absent(key)], [
                    put(key, value, self.lease),
                    {"request_put": {"key": b64(KNOWN + record.id), "value": b64("")}}])
            elif not current.ended and (current.epoch < record.epoch or (
                    current.node == self.node_id and current.epoch == record.epoch)):
                # its own key (again, bound to this lease), or a handover's newer epoch:
                # the source's key passes to this daemon, unless a takeover moved it first
                done = self.etcd.txn("claim", [unchanged(key, current.mod_revision)],
                                     [put(key, value, self.lease)])
            else:
                raise Superseded(current.node, current.address, current.epoch, current.ended)
            if done.get("succeeded"):
                return
        raise StateConflict(f"execution {record.id}: its owner key kept changing in etcd")

    def ended(self, record: ExecutionRecord) -> None:
        """The execution ended here: its owner key outlives this daemon's lease, so no replica
        ever runs it again."""
        value = {"node": self.node_id, "address": self.address, "epoch": record.epoch, "ended": True,
                 "state": record.state.value, "exit_code": record.exit_code}
        try:
            self.etcd.txn("end", [], [put(OWNERS + record.id, value, None)])
        except Unavailable as e:
            log.warning("execution %s ended, but etcd did not hear it: %s", record.id, e)

    def release(self, exec_id: str) -> None:
        """Stopped for a restart of this daemon: the owner key survives the lease's end."""
        current = self.owner(exec_id)
        if current is not None and current.node == self.node_id and not current.ended:
            value = {"node": self.node_id, "address": self.address, "epoch": current.epoch,
                     "resting": True}
            self.etcd.txn("rest", [unchanged(OWNERS + exec_id, current.mod_revision)],
                          [put(OWNERS + exec_id, value, None)])

    def bid_and_take(self, exec_id: str, holds: tuple[int, int], epoch: int) -> int | None:
        """Bid for an execution whose owner key vanished; the new epoch when this daemon won
        it (it holds the most, or ties first), None when another did or may."""
        bid_key = f"{BIDS}{exec_id}/{self.node_id}"
        self.etcd.txn("bid", [], [put(bid_key, {"logs": holds[0], "journal": holds[1],
                                                "epoch": epoch}, self.lease)])
        time.sleep(BID_SECONDS + random.random() * 0.05)
        bids = []
        for value, meta in self.etcd.prefix(f"{BIDS}{exec_id}/"):
            node = str(meta["key"].decode() if isinstance(meta["key"], bytes) else meta["key"]).rsplit("/", 1)[1]
            try:
                v = json.loads(value)
                bids.append(((int(v["logs"]), int(v["journal"])), node))
                epoch = max(epoch, int(v.get("epoch", 0)))   # the newest any bidder knows
            except (ValueError, KeyError, TypeError):
                continue
        best = max(bids, key=lambda b: (b[0], [-ord(ch) for ch in b[1]]), default=None)
        if best is None or best[1] != self.node_id:
            return None
        key = OWNERS + exec_id
        new_epoch = epoch + 1
        owner = {"node": self.node_id, "address": self.address, "epoch": new_epoch}
        done = self.etcd.txn("take over", [absent(key)],
                             [put(key, owner, self.lease), {"request_delete_range": {
                                 "key": b64(f"{BIDS}{exec_id}/"),
                                 "range_end": b64(_prefix_end(f"{BIDS}{exec_id}/"))}}])
        return new_epoch if done.get("succeeded") else None


def _owner_key(found: tuple[bytes, dict]) -> OwnerKey | None:
    value, meta = found
    try:
        v = json.loads(value)
        return OwnerKey(str(v["node"]), str(v.get("address", "")), int(v["epoch"]),
                        bool(v.get("ended", False)), int(meta.get("mod_revision", 0)))
    except (ValueError, KeyError, TypeError):
        return None


def _prefix_end(prefix: str) -> str:
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)
