"""Prometheus metrics of roostd (prefix `roost_`), served on /metrics.

Metrics live in their own registry so tests and embedders never see the process-wide default
collectors twice; the standard process, platform and GC collectors are registered on it
explicitly. `process_*` describes roostd itself: each execution's worker is a process of its
own, not counted there. Per-state execution counts and `roost_build_info` are computed at
scrape time, so they can never drift from the truth and cost nothing at start.

Names follow Prometheus' conventions: a unit suffix in base units (`_seconds`, `_bytes`),
counters end in `_total` (prometheus_client appends it), histograms and gauges never do, and a
histogram's name says what it measures (`roost_checkpoint_duration_seconds`, not `_total_`).
gRPC request metrics (`roost_grpc_server_*`) are in `roost.daemon.service.grpcmetrics`.
"""
from __future__ import annotations

from collections.abc import Callable

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily

REGISTRY = CollectorRegistry(auto_describe=True)

HOST_CALLS = Counter("roost_host_calls", "WASI host calls made by guests, by function",
                     ["function"], registry=REGISTRY)
MODULE_UPLOADS = Counter("roost_module_uploads", "Module uploads by result "
                         "(stored, deduplicated, rejected)", ["result"], registry=REGISTRY)
WORKER_STARTS = Counter("roost_worker_starts", "Worker processes started", registry=REGISTRY)
WORKER_FAILURES = Counter("roost_worker_failures", "Worker processes that ended without reporting "
                          "a result (crash, signal), by reason", ["reason"], registry=REGISTRY)
EXECUTION_ENDS = Counter("roost_execution_ends", "Executions that ended, by final state",
                         ["state"], registry=REGISTRY)
START_SECONDS = Histogram("roost_execution_start_seconds", "Time from a start request to the "
                          "guest's _start running", registry=REGISTRY,
                          buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10))
RESTORES = Counter("roost_restores", "Executions given a new worker that replays them "
                   "(worker died, daemon restarted)", registry=REGISTRY)
JOURNAL_RECORDS = Counter("roost_journal_records", "Host-call results journaled for replay",
                          registry=REGISTRY)
PREPARE_SECONDS = Histogram("roost_module_prepare_seconds", "Time to prepare (asyncify, polls) "
                            "and compile one mode of a module", registry=REGISTRY,
                            buckets=(.1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600))
CHECKPOINT_PAUSE = Histogram("roost_checkpoint_pause_seconds", "Guest stopped for its checkpoint: "
                             "from reaching its safepoint to running again after the rewind",
                             registry=REGISTRY,
                             buckets=(.00025, .0005, .001, .002, .005, .01, .025, .05, .1, .25, .5, 1, 2.5))
CHECKPOINT_TOTAL = Histogram("roost_checkpoint_duration_seconds", "From a checkpoint request to "
                             "the checkpoint committed in the store", registry=REGISTRY,
                             buckets=(.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10))
TIME_TO_SAFEPOINT = Histogram("roost_time_to_safepoint_seconds", "From a checkpoint request to "
                              "the guest stopped at a safepoint (after the pre-copy of its "
                              "dirty pages, made while it runs: that is not counted)", registry=REGISTRY,
                              buckets=(.0001, .0005, .001, .0025, .005, .01, .05, .1, .5, 1))
CHECKPOINT_BYTES = Counter("roost_checkpoint_bytes", "Checkpoint bytes by kind (memory: the "
                           "guest's memory size; dirty: pages written since the previous one; "
                           "stored: what was written, compressed)", ["kind"],
                           registry=REGISTRY)
RESTORE_SECONDS = Histogram("roost_restore_seconds", "Rebuilding an execution from a checkpoint in "
                            "a worker (page map, frames, memory, host state)", registry=REGISTRY,
                            buckets=(.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10))
DIRTY_TRACKER = Info("roost_dirty_tracker", "How checkpoints find written pages on this host "
                     "(uffd-wp-async, or hash where userfaultfd is unavailable)", registry=REGISTRY)
CHECKPOINT_WAIT = Histogram("roost_checkpoint_wait_seconds", "A checkpoint waiting for the "
                            "previous one's background write before it starts (checkpoints "
                            "asked for faster than the store takes them)",
                            registry=REGISTRY, buckets=(0, .001, .01, .05, .1, .5, 1, 5))
CHECKPOINTS = Counter("roost_checkpoints", "Checkpoints committed, by reason", ["reason"],
                      registry=REGISTRY)
REPLICATION_LAG_SECONDS = Gauge("roost_replication_lag_seconds", "Age of the oldest committed "
                                "checkpoint a replica peer has not acknowledged yet", ["peer"],
                                registry=REGISTRY)
REPLICATION_LAG_BYTES = Gauge("roost_replication_lag_bytes", "Stored bytes of the checkpoints a "
                              "replica peer has not acknowledged yet", ["peer"], registry=REGISTRY)
RECORDS_LAG = Gauge("roost_replication_records_lag", "Output and journal records written here "
                    "that a replica peer has not acknowledged yet", ["peer"], registry=REGISTRY)
RECORDS_LAG_SECONDS = Gauge("roost_replication_records_lag_seconds", "Age of the oldest output or "
                            "journal record a replica peer has not acknowledged yet", ["peer"],
                            registry=REGISTRY)
OUTPUT_RELEASE_SECONDS = Histogram("roost_output_release_seconds", "From a guest's output being "
                                   "stored to the replicas holding it (replication.ack): when "
                                   "clients may see it", registry=REGISTRY,
                                   buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1,
                                            0.5, 1, 5))
REPLICATION_BYTES = Counter("roost_replication_bytes", "Bytes pushed to peers (checkpoints, "
                            "modules, records), by peer", ["peer"], registry=REGISTRY)
STANDBY_WORKERS = Gauge("roost_standby_workers", "Workers holding the memory of an execution being "
                        "migrated here (a live migration's target), not running it yet",
                        registry=REGISTRY)
MIGRATIONS = Counter("roost_migrations", "Migrations this daemon drove, by mode and result",
                     ["mode", "result"], registry=REGISTRY)
MIGRATION_DOWNTIME = Histogram("roost_migration_downtime_seconds", "Guest stopped on the source "
                               "to running on the target", registry=REGISTRY,
                               buckets=(.005, .01, .02, .05, .1, .25, .5, 1, 2.5, 5, 10))
MIGRATION_BYTES = Histogram("roost_migration_size_bytes", "Bytes a migration sent to its target",
                            registry=REGISTRY,
                            buckets=(1 << 20, 16 << 20, 64 << 20, 256 << 20, 1 << 30, 4 << 30))
LOG_BYTES = Counter("roost_log_bytes", "Guest output bytes made durable, by stream", ["stream"],
                    registry=REGISTRY)
HTTP_REQUESTS = Counter("roost_http_requests", "Guests' HTTP requests that got an answer, by "
                        "destination host and status (the HTTP status, or the errno a failed "
                        "or refused one gave the guest)", ["host", "status"], registry=REGISTRY)
HTTP_SECONDS = Histogram("roost_http_request_duration_seconds", "Guests' HTTP requests: from sending to "
                         "the whole response (retries included), by destination host", ["host"],
                         registry=REGISTRY, buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025,
                                                     0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
HTTP_DURABLE_WAIT = Histogram("roost_http_durable_wait_seconds", "A guest's HTTP request waiting "
                              "for its intent to be durable (stored here, and held by replicas "
                              "per replication.ack) before it leaves", registry=REGISTRY,
                              buckets=(0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05,
                                       0.1, 0.5, 1, 5))
HTTP_REPLAYS = Counter("roost_http_replays", "HTTP requests answered from the journal on replay "
                       "(nothing sent)", registry=REGISTRY)
HTTP_RESENDS = Counter("roost_http_resends", "HTTP requests cut off by a crash and sent again "
                       "with the same Idempotency-Key", registry=REGISTRY)
HTTP_INTERRUPTED = Counter("roost_http_interrupted", "HTTP requests cut off by a crash and not "
                           "sent again (the guest got ECANCELED)", registry=REGISTRY)


class RoostdProcess:
    """The standard process collector (`process_*`), its HELP saying whose process it is:
    roostd's, without its workers (an operator summing CPU would otherwise miss them)."""

    NOTE = " (roostd's own process: execution workers are separate processes, not included)"

    def collect(self):  # noqa: D102 - prometheus protocol
        for family in PROCESS_COLLECTOR.collect():
            family.documentation += self.NOTE
            yield family


class BuildInfo:
    """roost_build_info{version, python, wasmtime, prepare_version} 1, from package metadata at
    the first scrape: wasmtime is named without being imported (roostd loads it lazily) and
    start pays nothing for it."""

    DOC = "roostd's build: roost, Python and wasmtime versions, the module preparation's version"

    def __init__(self) -> None:
        self._labels: dict[str, str] | None = None

    def describe(self):  # noqa: D102 - prometheus protocol
        return [InfoMetricFamily("roost_build", self.DOC)]

    def collect(self):  # noqa: D102 - prometheus protocol
        if self._labels is None:
            self._labels = build_labels()
        yield InfoMetricFamily("roost_build", self.DOC, value=self._labels)


def build_labels() -> dict[str, str]:
    import importlib.metadata
    import platform

    from roost.daemon.modules.prepare import PREPARE_VERSION

    def installed(package: str) -> str:
        try:
            return importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            return "unknown"

    return {"version": installed("roost"), "python": platform.python_version(),
            "wasmtime": installed("wasmtime"), "prepare_version": str(PREPARE_VERSION)}


REGISTRY.register(RoostdProcess())
REGISTRY.register(PLATFORM_COLLECTOR)
REGISTRY.register(GC_COLLECTOR)
REGISTRY.register(BuildInfo())


class ExecutionStates:
    """Collector for roost_executions{state}: asks a callback at scrape time."""

    def __init__(self, counts: Callable[[], dict[str, int]]) -> None:
        self.counts = counts

    def describe(self):  # noqa: D102 - prometheus protocol
        return [GaugeMetricFamily("roost_executions", "Executions this daemon owns, by state",
                                  labels=["state"])]

    def collect(self):  # noqa: D102 - prometheus protocol
        family = GaugeMetricFamily("roost_executions", "Executions this daemon owns, by state",
                                   labels=["state"])
        for state, n in sorted(self.counts().items()):
            family.add_metric([state], n)
        yield family


def register_states(counts: Callable[[], dict[str, int]]) -> None:
    REGISTRY.register(ExecutionStates(counts))


def serve(listen: str):
    """Start the /metrics HTTP endpoint on HOST:PORT; returns the server (for shutdown)."""
    host, _, port = listen.rpartition(":")
    server, _thread = start_http_server(int(port), addr=host.strip("[]") or "127.0.0.1",
                                        registry=REGISTRY)
    return server
