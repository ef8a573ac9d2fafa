"""The daemon: everything roostd runs, wired together (`Daemon`), started and stopped.

`main` (roostd's entry point) imports this module only after it has spawned the first spare
workers, so they warm up while this module's imports run.

Start order: the store, the parts, the gRPC ports (bound), then `start` serves the API and
sends READY — before any execution is resumed. Recovery (the executions a previous daemon left
running, interrupted handovers, etcd takeovers, durable-sleep timers) runs in the background
after it (`recovery` thread): a client may ask about an execution not resumed yet, and its
answer is what the supervisor says of one being recovered (`Supervisor.recover`). The etcd
client and numpy (the dirty tracker's probe) are imported only when needed.

Serving within 0.1 s of start (issue 14): nothing on the way to `start` imports numpy,
zstandard or wasmtime (`lazy`; the module registry makes its wasmtime engine at first use);
`_warm` imports them in the background once recovery is done. /metrics serves after the API.
"""
from __future__ import annotations

import logging
import os
import threading
from concurrent import futures
from typing import TYPE_CHECKING, Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from roost.daemon.cluster import tls
from roost.daemon.cluster.authority import Ownership
from roost.daemon.cluster.handover import Handovers
from roost.daemon.cluster.migration import Migrations
from roost.daemon.cluster.peerauth import PeerGate
from roost.daemon.cluster.peerclaims import PeerClaims
from roost.daemon.cluster.peers import PeerClient, Peers
from roost.daemon.cluster.push import Pusher, Replicator
from roost.daemon.cluster.receive import Replicas
from roost.daemon.cluster.shipping import Shipper
from roost.daemon.errors import InvalidRequest, RoostError, Superseded, Unavailable
from roost.daemon.executions.pool import WorkerPool, WorkerProcess
from roost.daemon.executions.supervisor import Supervisor
from roost.daemon.modules.registry import ModuleRegistry
from roost.daemon.node import config as config_mod
from roost.daemon.node import datadir, metrics, notify
from roost.daemon.node import reload as reload_mod
from roost.daemon.node.identity import NodeIdentity
from roost.daemon.runtime.vfs import VfsLimits
from roost.daemon.service import control as control_service
from roost.daemon.service import controlsocket
from roost.daemon.service import peer as peer_service
from roost.daemon.service.grpcmetrics import ServerMetrics
from roost.daemon.service.longpolls import LongPolls
from roost.daemon.store.checkpoints import PageStore
from roost.daemon.store.db import Store
from roost.daemon.store.records import ExecutionRecord
from roost.v1 import control_pb2, peer_pb2

if TYPE_CHECKING:
    from roost.daemon.cluster.membership import Membership
    from roost.daemon.cluster.takeover import Takeovers

log = logging.getLogger("roostd")


class Daemon:
    """Everything roostd runs, wired together; `stop` undoes it in reverse order."""

    def __init__(self, cfg: config_mod.Config, workers: list[WorkerProcess] | None = None) -> None:
        """`workers`: spares spawned already (by `main`, before these imports)."""
        cfg.data_dir.mkdir(parents=True, exist_ok=True)
        self.lock = datadir.DataDirLock(cfg.data_dir)       # before anything reads the store
        self.recovered = threading.Event()                 # the background recovery is done
        self.takeovers: Takeovers | None = None
        try:
            self._build(cfg, workers)
        except BaseException:
            self.lock.release()
            raise

    def _build(self, cfg: config_mod.Config, workers: list[WorkerProcess] | None) -> None:
        self.credentials = tls.from_paths(cfg.tls_ca, cfg.tls_cert, cfg.tls_key)
        # (the server's certificates: replaced by a reload, for new connections)
        self.server_certs = reload_mod.ServerCerts(self.credentials) if self.credentials else None
        cfg.node_id = _node_id(cfg, self.credentials)
        self.cfg = cfg
        self.stopped = threading.Event()
        self.store = Store(cfg.data_dir / "store", cfg.store_map_size_bytes)
        self.modules = ModuleRegistry(self.store, cfg.cache_dir or cfg.data_dir / "cache",
                                      cfg.max_module_bytes, cfg.asyncify_stack_bytes,
                                      prepared_wait_seconds=cfg.prepared_wait_seconds,
                                      run_unprepared=cfg.run_unprepared,
                                      safepoint_budget_seconds=cfg.safepoint_budget_seconds)
        self.pool = WorkerPool(cfg.spare_workers, workers)
        self.checkpoints = PageStore(self.store)   # the one LMDB checkpoint source and sink
        self.supervisor = Supervisor(self.store, self.modules, self.pool, cfg.node_id,
                                     cfg.memory_limit_bytes, cfg.durable_sleep_seconds,
                                     cfg.checkpoint_every_seconds, cfg.checkpoint_retain,
                                     address=cfg.address,
                                     standby_timeout_seconds=cfg.migration_standby_timeout_seconds,
                                     vfs_limits=VfsLimits(cfg.vfs_limit_bytes, cfg.vfs_inodes,
                                                          cfg.links_per_inode),
                                     output_limit_bytes=cfg.output_limit_bytes,
                                     pages=self.checkpoints)
        self.supervisor.max_executions = cfg.max_executions
        self.supervisor.max_memory_total_bytes = cfg.max_memory_total_bytes
        self.supervisor.retain_ended_seconds = cfg.retain_ended_seconds   # (retention thread)
        self.peers = Peers(self.credentials, cfg.node_id, cfg.address)
        me, checkpoints = NodeIdentity(cfg.node_id, cfg.address), self.checkpoints
        self.membership = self._join(cfg) if cfg.etcd else None
        self.pusher = Pusher(me, self.store, checkpoints, self.modules)
        self.modules.on_prepared = self._prepared
        self.replicator = Replicator(me, checkpoints, self.supervisor, self.pusher,
                                     self._replica_peers, cfg.replication_ack)
        self.supervisor.on_commit = self.replicator.committed
        self.supervisor.sleep_counts = self.replicator.holds
        self.shipper = Shipper(me, self.store, checkpoints, self.pusher, cfg.replication_ack,
                               self._replica_peers)
        self.supervisor.output.on_append = self.shipper.appended
        self.supervisor.output.on_durable = self.shipper.durable
        self.supervisor.launcher.http = cfg.http_settings()
        self.supervisor.launcher.on_launch = lambda live: self.shipper.track(
            live.record, live.next_seq, live.journal_seq)
        self.supervisor.released = self.shipper
        ownership = Ownership(cfg.node_id, me.owns, self.supervisor.runs)
        self.handovers = Handovers(me, self.store, checkpoints, self.supervisor, self.peers, ownership)
        self.replicas = Replicas(me, self.store, checkpoints, self.supervisor, cfg.checkpoint_retain,
                                 self.handovers, ownership)
        self.migrations = Migrations(me, self.store, checkpoints, self.supervisor, self.peers,
                                     self.pusher, self.handovers, cfg.migration_downtime_seconds,
                                     cfg.migration_max_rounds)
        self.gate = PeerGate(self.credentials is not None, cfg.node_id, cfg.peers)
        if self.membership is not None:
            self._hook_membership(self.membership)
        elif cfg.peers:
            claims = PeerClaims(lambda: [self.peers.client(a) for a in cfg.peers
                                         if a != cfg.address], cfg.node_id)
            self.supervisor.launcher.claim = claims.claim
            self.supervisor.launcher.on_superseded = self._superseded
        self.health = health.HealthServicer()
        self.server = self._grpc_server()         # the ports are bound before anything resumes
        self.metrics_server: Any = None            # (`start`: after the API serves)

    def _recover(self) -> None:
        """What a restart left to do, after the API serves: resume the executions left
        running (each gets a warm worker: `Supervisor.recover`), finish interrupted
        handovers, take over dead owners' executions (etcd), wake durable sleeps."""
        try:
            resumed = self.supervisor.recover()
            if resumed:
                log.info("resumed %d executions that were running when roostd last stopped", resumed)
            self.handovers.recover()
            if self.membership is not None:
                from roost.daemon.cluster.takeover import Takeovers
                self.takeovers = Takeovers(self.membership, self.store, self.supervisor)
                self.takeovers.start()
            self.supervisor.timers.start()
        except Exception:
            log.exception("recovery after start failed")
        finally:
            self.recovered.set()
        notify.notify(f"STATUS=listening on {self._where()}; recovery done")
        _dirty_tracker_info()
        self._warm()

    def _warm(self) -> None:
        """Import now, off the API's path, what roostd's start left for first use (numpy,
        zstandard, wasmtime, its engine: `lazy`), so the first upload or checkpoint does not
        pay for it."""
        try:
            from roost.daemon import lazy
            lazy.load("roost.daemon.runtime.wasi")          # (imports wasmtime)
            lazy.numpy.ndarray, lazy.zstandard.ZstdError  # noqa: B018
            self.modules._engine  # noqa: B018  (made once, at first use)
        except Exception:                           # (its first use reports it again)
            log.exception("warming up after start")

    def _join(self, cfg: config_mod.Config) -> Membership:
        """Join the cluster on etcd (before anything runs: a node id held by a live daemon
        is refused here)."""
        # (an etcd call never outlasts a third of the lease: fencing stays on time)
        from roost.daemon.cluster.membership import Etcd, Membership
        membership = Membership(Etcd(cfg.etcd, timeout=max(0.3, cfg.lease_seconds / 3)),
                                cfg.node_id, cfg.address, cfg.lease_seconds,
                                cfg.data_dir / "etcd_lease")
        membership.load = lambda: (len(self.supervisor.lives.all()), os.getloadavg()[0])
        membership.join()
        return membership

    def _prepared(self, digest: str, mode: str) -> None:
        """A module finished its preparation after its executions' replicas got it: send them
        its prepared form too (a thread of its own: the preparer goes on), so that the
        cluster prepares it once and a takeover only compiles it."""
        executions = [r.id for r in self.store.list_executions()
                      if r.module_sha256 == digest and not r.state.ended and self.supervisor.owns(r)]
        if executions:
            threading.Thread(target=self._push_prepared, args=(digest, executions),
                             name="push-prepared", daemon=True).start()

    def _push_prepared(self, digest: str, executions: list[str]) -> None:
        sent: set[str] = set()
        for exec_id in executions:
            for client in self._replica_peers(exec_id):
                if client.address in sent:
                    continue
                sent.add(client.address)
                try:
                    self.pusher.send_module(client, digest)
                except Exception as e:       # a peer down: its takeover prepares it itself
                    log.warning("module %s: prepared form not sent to %s: %s", digest[:12],
                                client.address, e)

    def _hook_membership(self, membership: Membership) -> None:
        """What etcd says of ownership reaches the supervisor, the shipper and the gate."""
        supervisor = self.supervisor
        supervisor.launcher.claim = membership.claim
        supervisor.launcher.on_superseded = self._superseded
        supervisor.ending.on_end = membership.ended
        membership.on_fence = supervisor.freeze
        membership.on_lost = self._reclaim
        self.shipper.fenced = membership.fenced
        self.gate.members = lambda: [m.address for m in membership.members().values()]
        self.gate.is_member = membership.is_member

    def _superseded(self, record: ExecutionRecord, e: Superseded) -> None:
        """Another daemon owns the execution now: the copy here is dropped, and nothing more
        of it is shipped from here."""
        self.supervisor.superseded(record, e)
        self.shipper.forget(record.id)

    def _reclaim(self) -> None:
        """This daemon's lease expired and it has a new one: each running execution is
        claimed again; one another daemon took over meanwhile is dropped here."""
        assert self.membership is not None
        for live in self.supervisor.lives.all():
            try:
                self.membership.claim(live.record)
            except Superseded as e:
                self._superseded(live.record, e)
            except RoostError as e:
                log.warning("execution %s: claiming it again: %s", live.record.id, e)

    def _nodes(self) -> list[control_pb2.Node]:
        """The members etcd knows (refreshed with every lease renewal), else this daemon and
        its configured peers as they answer now."""
        me = self.cfg.node_id
        if self.membership is not None:
            members = sorted(self.membership.members().values(), key=lambda m: m.node_id)
            return [control_pb2.Node(node_id=m.node_id, address=m.address, healthy=True,
                                     executions=m.executions, load=m.load, self=m.node_id == me)
                    for m in members]
        out = [control_pb2.Node(node_id=me, address=self.cfg.address, healthy=True, self=True,
                                executions=len(self.supervisor.lives.all()),
                                load=os.getloadavg()[0])]
        for address in self.cfg.peers:
            client = self.peers.client(address)
            try:
                out.append(control_pb2.Node(node_id=client.hello(timeout=1.0), address=address,
                                            healthy=True))
            except RoostError:
                out.append(control_pb2.Node(node_id=client.node_id or "?", address=address))
        return out

    def _locate(self, exec_id: str) -> tuple[str, str] | None:
        """Where etcd says an execution this daemon does not hold runs (None: nowhere known;
        Unavailable while it has no owner — its owner died, a replica is taking it over — or
        etcd does not answer: the client asks again)."""
        if self.membership is None or not exec_id:
            return None
        owner = self.membership.owner(exec_id)
        if owner is not None and owner.address:
            return owner.node, owner.address
        if owner is None and self.membership.known(exec_id):
            raise Unavailable(f"execution {exec_id} has no owner at the moment (its owner's "
                              "lease expired): a replica is taking it over, ask again")
        return None

    def _replica_peers(self, exec_id: str) -> list[PeerClient]:
        """The peers holding `exec_id`'s replicas: `replication.factor` of the live members
        (etcd), in rendezvous-hash order, those that did not answer lately
        (`PeerClient.down`) last; or of the configured peers that answer, in their order.
        None when there is no other live member: output is then released unreplicated."""
        factor = self.cfg.replication_factor
        if self.membership is not None:
            members = self.membership.replica_nodes(exec_id, -1)
            candidates = [self.peers.client(m.address) for m in members if m.address]
            # Those answering first; if none answers, still them: output waits for a replica
            # rather than be released where a partition could fork it (another member may
            # take the execution over).
            candidates.sort(key=lambda c: c.down())
        else:
            # Without etcd nothing takes an execution over by itself (only `roost recover`,
            # the operator's word that this daemon is gone): a peer that does not answer is
            # left out, and with none left output is released as stored.
            candidates = [c for c in (self.peers.client(a) for a in self.cfg.peers
                                      if a != self.cfg.address) if not c.down()]
        return candidates if factor < 0 else candidates[:factor]

    def _grpc_server(self) -> grpc.Server:
        opts = [("grpc.max_receive_message_length", self.cfg.max_message_bytes),
                ("grpc.max_send_message_length", self.cfg.max_message_bytes),
                ("grpc.so_reuseport", 0),
                # clients and peers ping every 2 s to find a dead host (their keepalive)
                ("grpc.http2.min_recv_ping_interval_without_data_ms", 1000),
                ("grpc.keepalive_permit_without_calls", 1), ("grpc.http2.max_ping_strikes", 0)]
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=self.cfg.grpc_threads,
                                                        thread_name_prefix="grpc"), options=opts,
                             interceptors=(ServerMetrics(),))    # (requests by method and code)
        control = control_service.ControlService(self.supervisor, self.modules, self.migrations, self.replicator,
                                     self.cfg.max_memory_limit_bytes,
                                     LongPolls(self.cfg.long_polls, self.cfg.long_polls_per_client),
                                     self.checkpoints)
        self.control = control                   # (a reload changes its memory cap)
        control.nodes = self._nodes
        control.locate = self._locate
        control.automatic = self.membership is not None
        control.replicated = lambda exec_id: self.shipper.introduced(exec_id, 60.0)
        peer = peer_service.PeerService(self.supervisor, self.modules, self.replicas, self.handovers,
                                   self.gate)
        server.add_generic_rpc_handlers((control_service.handlers(control), peer_service.handlers(peer)))
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        names = (control_pb2.DESCRIPTOR.services_by_name["Control"].full_name,
                 peer_pb2.DESCRIPTOR.services_by_name["Peer"].full_name,
                 health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME)
        reflection.enable_server_reflection(names, server)
        if self.cfg.control_socket:
            self._bind_socket(server)
        if self.cfg.listen:
            self._bind_tcp(server)
        return server

    def _bind_socket(self, server: grpc.Server) -> None:
        """The private Unix socket (plaintext: file permissions guard it; `controlsocket`)."""
        path = self.cfg.control_socket
        address = controlsocket.prepare(path)
        with controlsocket.private_umask():
            bound = _add_port(server.add_insecure_port, address)
        if bound == 0:
            raise RoostError(f"cannot listen on the control socket {path}")
        controlsocket.restrict(path, self.cfg.control_socket_group)

    def _bind_tcp(self, server: grpc.Server) -> None:
        if self.server_certs is not None:
            certs = self.server_certs
            bound = _add_port(lambda a: server.add_secure_port(a, certs.server_credentials()),
                              self.cfg.listen)
        else:
            bound = _add_port(server.add_insecure_port, self.cfg.listen)
        if bound == 0:
            raise RoostError(f"cannot listen on {self.cfg.listen}: the address is in use or "
                             "not this host's")

    def _where(self) -> str:
        return " and ".join(filter(None, (self.cfg.control_socket, self.cfg.listen)))

    def start(self, recover: bool = True) -> None:
        """Serve the API, send READY, then recover in the background. READY means the API
        answers: executions left running may still be resuming (STATUS says when recovery
        is done); what a client asks of one meanwhile waits for it, or is refused as
        UNAVAILABLE (retriable) where it needs its worker (`Supervisor.recover`)."""
        self.server.start()
        for name in ("", "roost.v1.Control", "roost.v1.Peer"):
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        # (every metric is registered at import: nothing is scraped before it is)
        metrics.register_states(self.supervisor.state_counts)
        if self.cfg.metrics_listen:
            try:
                self.metrics_server = metrics.serve(self.cfg.metrics_listen)
            except OSError:                     # (roostd exits: main says why)
                self.server.stop(None).wait()
                raise
        where = self._where()
        log.info("roostd %s listening on %s (data in %s, metrics on %s)", self.cfg.node_id,
                 where, self.cfg.data_dir, self.cfg.metrics_listen or "off")
        notify.notify(f"READY=1\nSTATUS=listening on {where}; recovering\nMAINPID={os.getpid()}")
        notify.start_watchdog(self.stopped, self.alive)
        if recover:
            threading.Thread(target=self._recover, name="recovery", daemon=True).start()

    def reload(self, cfg: config_mod.Config, credentials: tls.Credentials | None = None) -> None:
        """Apply a reloaded config's run-time settings (`node.reload.RUNTIME`: the caller
        checked the config and logs what changed) and, when given, new TLS certificates:
        new executions, launches and connections get them; running executions keep theirs."""
        for name in reload_mod.RUNTIME:               # (in place: closures hold self.cfg)
            setattr(self.cfg, name, getattr(cfg, name))
        cfg, supervisor = self.cfg, self.supervisor
        supervisor.default_memory_limit_bytes = cfg.memory_limit_bytes
        self.control.max_memory_bytes = cfg.max_memory_limit_bytes
        supervisor.max_executions = cfg.max_executions
        supervisor.max_memory_total_bytes = cfg.max_memory_total_bytes
        supervisor.retain_ended_seconds = cfg.retain_ended_seconds
        supervisor.vfs_limits = supervisor.launcher.vfs_limits = VfsLimits(
            cfg.vfs_limit_bytes, cfg.vfs_inodes, cfg.links_per_inode)
        supervisor.output.output_limit_bytes = cfg.output_limit_bytes
        supervisor.checkpoint_every_seconds = cfg.checkpoint_every_seconds
        supervisor.launcher.durable_sleep_seconds = cfg.durable_sleep_seconds
        supervisor.launcher.http = cfg.http_settings()
        self.gate.set_peers(cfg.peers)
        if credentials is not None and self.server_certs is not None:
            self.server_certs.replace(credentials)
            self.credentials = credentials
            self.peers.use_credentials(credentials)

    def alive(self) -> bool:
        """The watchdog pings only while the supervisor, the timers and the store answer: a
        daemon wedged in any of them is restarted by systemd instead of looking healthy."""
        try:
            with self.store.txn("watchdog's store check"):
                pass
        except RoostError as e:
            log.error("watchdog: the store does not answer: %s", e)
            return False
        if self.recovered.is_set() and not self.supervisor.timers.alive():
            log.error("watchdog: the timer thread is gone: durable sleeps would never wake")
            return False
        if not self.supervisor.responsive():
            log.error("watchdog: the supervisor is stuck (its lock held for 2 s)")
            return False
        return True

    def stop(self) -> None:
        notify.notify("STOPPING=1\nSTATUS=stopping")
        log.info("stopping")
        self.health.enter_graceful_shutdown()
        stopping = self.server.stop(grace=2.0)
        self.supervisor.lives.stopping = True      # (recovery, if still going, launches no more)
        self.recovered.wait(10)
        self.replicator.stop()
        self.shipper.stop()
        if self.takeovers is not None:
            self.takeovers.stop()
        self.supervisor.shutdown()
        if self.membership is not None:
            self._rest(self.membership)
        self.pool.close()
        self.peers.close()
        stopping.wait(5)
        if self.metrics_server is not None:
            self.metrics_server.shutdown()
        self.store.close()
        self.lock.release()
        self.stopped.set()
        log.info("stopped")

    def _rest(self, membership: Membership) -> None:
        """A clean stop is no host failure: the owner keys of the executions left RUNNING
        here outlive the lease (replicas do not take them over), and are claimed again at
        the next start."""
        for record in self.store.list_executions():
            if self.supervisor.owns(record) and not record.state.ended and not record.migration:
                try:
                    membership.release(record.id)
                except RoostError as e:
                    log.warning("execution %s: %s", record.id, e)
        membership.leave()


def _add_port(add, address: str) -> int:
    """gRPC's add_*_port: the port bound, 0 when it could not bind (newer grpcio raises)."""
    try:
        return add(address)
    except RuntimeError:
        return 0


def _node_id(cfg: config_mod.Config, credentials: tls.Credentials | None) -> str:
    """The configured node id, else the one this daemon's certificate names, else the one kept
    in the data dir (made unique on first start: `datadir.node_id`). A certificate naming
    another node is an error: its peers would take this daemon for that one."""
    named = credentials.node_id(cfg.tls_cert) if credentials is not None else ""
    if named and cfg.node_id and named != cfg.node_id:
        raise InvalidRequest(f"node id {cfg.node_id!r} differs from {named!r}, the one that "
                             f"{cfg.tls_cert} names ({tls.PEER_URI}{named})")
    if credentials is not None and not named and cfg.peers:
        log.warning("%s names no %s<node-id>: peers will refuse this daemon's calls",
                    cfg.tls_cert, tls.PEER_URI)
    return cfg.node_id or named or datadir.node_id(cfg.data_dir)




def _dirty_tracker_info() -> None:
    """roost_dirty_tracker: which dirty-page tracker workers use here (its probe imports
    numpy: after the start, off the API's path)."""
    from roost.daemon.checkpoint import dirty
    reason = dirty.probe()
    metrics.DIRTY_TRACKER.info({"tracker": "uffd-wp-async" if reason is None else "hash",
                                "reason": reason or ""})
