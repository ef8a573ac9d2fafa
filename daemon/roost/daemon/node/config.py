"""roostd configuration: embedded defaults < TOML file (--config) < command-line flags.

A daemon started with no arguments must work on its defaults, so every field has one; the data
directory follows systemd's StateDirectory when run as a service.
"""
from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from roost.daemon.errors import InvalidRequest
from roost.daemon.http.settings import HttpSettings
from roost.daemon.http.settings import settings as http_settings

GiB = 1 << 30


def default_data_dir() -> Path:
    """systemd's $STATE_DIRECTORY when set (the unit's StateDirectory=), else a per-user dir."""
    state = os.environ.get("STATE_DIRECTORY")
    if state:
        return Path(state.split(":")[0])
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "roost"


def _physical_memory() -> int:
    """This host's RAM: guests rarely use all of their limits, so the default cap on their
    limits' sum is a multiple of it."""
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def default_control_socket() -> str:
    """Where the Control API listens by default: a Unix socket only its owner (and group) can
    use, as Docker's is — systemd's $RUNTIME_DIRECTORY (the unit's RuntimeDirectory=), else
    /run/roost for root, else the user's runtime dir. The CLI looks in the same places
    (`roost.client.api.default_addr`)."""
    runtime = os.environ.get("RUNTIME_DIRECTORY")
    if runtime:
        return os.path.join(runtime.split(":")[0], "roostd.sock")
    if os.geteuid() == 0:
        return "/run/roost/roostd.sock"
    base = os.environ.get("XDG_RUNTIME_DIR") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, "roost", "roostd.sock")


@dataclass
class Config:
    data_dir: Path = field(default_factory=default_data_dir)
    control_socket: str = field(default_factory=default_control_socket)   # "" disables it
    control_socket_group: str = ""               # a group whose members may use the socket too
    listen: str = ""                             # TCP HOST:PORT for Control and Peer; "": none
    metrics_listen: str = "127.0.0.1:9464"      # "" disables the metrics endpoint
    node_id: str = ""                            # "": the certificate's, else made once per data dir
    peers: list[str] = field(default_factory=list)
    memory_limit_bytes: int = 2 * GiB            # default per-execution linear-memory cap
    max_memory_limit_bytes: int = 4 * GiB        # the most an execution may ask for (wasm32: 4 GiB)
    max_executions: int = 1024                   # executions running here at once, at most
    max_memory_total_bytes: int = field(default_factory=lambda: 4 * _physical_memory())
    #                                              their memory limits added up, at most
    # Per execution, what a guest may put in its files and its stored output (see README,
    # "Limits"). Files live in the worker's memory and travel whole in a migration message
    # (max_message_bytes): 256 MiB keeps both bounded. 1 GiB of output is more than any batch
    # job's logs, and keeps one runaway guest from filling the store.
    vfs_limit_bytes: int = 256 * 1024 * 1024     # file data + symlink targets (EFBIG/ENOSPC)
    vfs_inodes: int = 100_000                    # inodes, and names in directories (ENOSPC)
    links_per_inode: int = 1000                  # hard links to one file (EMLINK)
    output_limit_bytes: int = 1 * GiB            # stdout + stderr stored: then it pauses
    max_module_bytes: int = 256 * 1024 * 1024
    max_message_bytes: int = 512 * 1024 * 1024   # gRPC messages (mounts travel in StartExecution)
    store_map_size_bytes: int = 256 * GiB        # LMDB map size: address space, not disk
    spare_workers: int = 1                       # pre-started idle workers: fast execution start
    grpc_threads: int = 128                      # gRPC server threads; a long-poll holds one
    long_polls: int = 96                         # at most this many (logs -f, wait) at once: the
    long_polls_per_client: int = 64              # other threads always serve short calls
    asyncify_stack_bytes: int = 1 << 20          # per execution: the saved call stack's room
    # A module's first runs start before its preparation for checkpoints ends (seconds, not
    # minutes), unprepared: no checkpoints until a restart. false: a run waits for it.
    run_unprepared: bool = True
    prepared_wait_seconds: float = 3.0           # ... after waiting this long for a small module
    # A checkpoint request held longer by an uninstrumented function instruments it at the
    # module's next preparation (adaptive loop polls, preemptive mode).
    safepoint_budget_seconds: float = 0.010
    durable_sleep_seconds: float = 2.0           # longer sleeps checkpoint and release the worker
    # A checkpoint a second: a recovery re-executes at most about 1 s of the guest (replay of
    # the journal after the latest checkpoint). Incremental: 1-4 ms of pause for small and
    # 1 GiB guests, none of it when nothing changed; `roost run --checkpoint-every` per run.
    checkpoint_every_seconds: float = 1.0
    checkpoint_retain: int = 2                   # checkpoints kept per execution
    cache_dir: Path | None = None                # prepared-module artifacts (default data_dir/cache)
    advertise: str = ""                          # the address peers and clients reach us at (default: listen)
    replication_factor: int = 1                  # peers each execution is replicated to (-1: every peer)
    replication_ack: str = ""                    # async | one | all: the replicas holding output
    #                                              before it counts ("": one with peers, else async)
    etcd: list[str] = field(default_factory=list)   # etcd endpoints (http://HOST:PORT): a cluster
    lease_seconds: int = 3                       # this daemon's etcd lease: a dead host's TTL
    migration_downtime_seconds: float = 0.02     # live migration: stop-and-copy when the rest fits
    migration_max_rounds: int = 10               # pre-copy rounds at most
    migration_standby_timeout_seconds: float = 120.0   # a target's standby with no round for this long goes
    tls_ca: str = ""                             # mutual TLS: CA certificate (PEM) peers and
    tls_cert: str = ""                           # clients must be signed by, this daemon's
    tls_key: str = ""                            # certificate and key; all empty: plaintext
    # Outbound HTTP of guests (`http`): none unless [[http.allow]] lists destinations.
    http_allow: list[Any] = field(default_factory=list)   # [{prefix, idempotency_keys}]
    http_timeout_seconds: float = 30.0           # per attempt: connect, send, whole response
    http_connect_timeout_seconds: float = 5.0
    http_retries: int = 3                        # more attempts (connection errors; 5xx if safe)
    http_max_response_bytes: int = 16 << 20      # a larger response: EMSGSIZE, nothing kept
    http_ca_bundle: str = ""                     # PEM CAs to trust ("": the system's store)

    def __post_init__(self) -> None:
        if self.replication_ack not in ("", "async", "one", "all"):
            raise InvalidRequest(f"replication.ack must be async, one or all, not {self.replication_ack!r}")
        tls = [bool(self.tls_ca), bool(self.tls_cert), bool(self.tls_key)]
        if any(tls) and not all(tls):
            raise InvalidRequest("tls: ca, cert and key are needed together")
        self._check_guest_limits()
        self.http_settings()

    def http_settings(self) -> HttpSettings:
        """The [http] section checked (InvalidRequest names what is wrong)."""
        return http_settings(self.http_allow, self.http_timeout_seconds,
                             self.http_connect_timeout_seconds, self.http_retries,
                             self.http_max_response_bytes, self.http_ca_bundle)

    def _check_guest_limits(self) -> None:
        """The per-execution guest limits are positive integers (a 0 or a float would turn
        a bound off or fail inside a worker)."""
        for name, key in GUEST_LIMIT_KEYS.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise InvalidRequest(f"limits.{key} must be a positive integer, not {value!r}")

    def check_threads(self) -> None:
        """Long-polls leave threads for everything else (`longpolls`)."""
        if not 1 <= self.long_polls <= self.grpc_threads - 8:
            raise InvalidRequest(f"grpc.long_polls ({self.long_polls}) must leave at least 8 of "
                                 f"grpc.threads ({self.grpc_threads}) to other calls")
        if not 1 <= self.long_polls_per_client <= self.long_polls:
            raise InvalidRequest("grpc.long_polls_per_client must be from 1 to grpc.long_polls")

    def check_endpoints(self) -> None:
        """The effective config listens somewhere, and on TCP if it has peers."""
        if not self.listen and not self.control_socket:
            raise InvalidRequest("nothing to listen on: set listen (HOST:PORT) or control_socket")
        if (self.peers or self.etcd) and not self.listen:
            raise InvalidRequest("peers need listen = \"HOST:PORT\": they reach this daemon over TCP")

    @property
    def address(self) -> str:
        """Where others reach this daemon."""
        return self.advertise or self.listen

    def merge(self, values: dict[str, Any], origin: str) -> "Config":
        """Return a copy with `values` applied; unknown keys are an error naming `origin`."""
        known = {f.name: f for f in dataclasses.fields(self)}
        changes: dict[str, Any] = {}
        for key, value in values.items():
            if value is None:
                continue
            name = key.replace("-", "_")
            if name not in known:
                raise InvalidRequest(f"{origin}: unknown setting {key!r}")
            changes[name] = Path(value) if name in ("data_dir", "cache_dir") else value
        return dataclasses.replace(self, **changes)


# Config field -> its key in the TOML [limits] section (named in errors and pause reasons).
GUEST_LIMIT_KEYS = {"vfs_limit_bytes": "vfs_bytes", "vfs_inodes": "vfs_inodes",
                    "links_per_inode": "links", "output_limit_bytes": "output_bytes"}


def flatten(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """TOML sections become prefixes: [limits] memory_bytes -> memory_limit_bytes style keys."""
    out: dict[str, Any] = {}
    for key, value in table.items():
        if isinstance(value, dict):
            out.update(flatten(value, prefix + key + "_"))
        else:
            out[prefix + key] = value
    return out


SECTION_ALIASES = {"limits_memory_bytes": "memory_limit_bytes",
                   "limits_max_memory_bytes": "max_memory_limit_bytes",
                   "limits_executions": "max_executions",
                   "limits_memory_total_bytes": "max_memory_total_bytes",
                   "limits_vfs_bytes": "vfs_limit_bytes",
                   "limits_vfs_inodes": "vfs_inodes",
                   "limits_links": "links_per_inode",
                   "limits_output_bytes": "output_limit_bytes",
                   "limits_module_bytes": "max_module_bytes",
                   "limits_message_bytes": "max_message_bytes",
                   "store_map_size_bytes": "store_map_size_bytes",
                   "workers_spares": "spare_workers",
                   "grpc_threads": "grpc_threads",
                   "grpc_long_polls": "long_polls",
                   "grpc_long_polls_per_client": "long_polls_per_client",
                   "limits_asyncify_stack_bytes": "asyncify_stack_bytes",
                   "modules_run_unprepared": "run_unprepared",
                   "modules_prepared_wait_seconds": "prepared_wait_seconds",
                   "modules_safepoint_budget_seconds": "safepoint_budget_seconds",
                   "checkpoints_durable_sleep_seconds": "durable_sleep_seconds",
                   "checkpoints_every_seconds": "checkpoint_every_seconds",
                   "checkpoints_retain": "checkpoint_retain",
                   "replication_factor": "replication_factor",
                   "replication_ack": "replication_ack",
                   "cluster_etcd": "etcd", "cluster_lease_seconds": "lease_seconds",
                   "migration_downtime_seconds": "migration_downtime_seconds",
                   "migration_max_rounds": "migration_max_rounds",
                   "migration_standby_timeout_seconds": "migration_standby_timeout_seconds",
                   "tls_ca": "tls_ca", "tls_cert": "tls_cert", "tls_key": "tls_key",
                   "control_socket": "control_socket", "control_socket_group": "control_socket_group"}


def default_config_file() -> Path | None:
    """systemd's ConfigurationDirectory= (/etc/roost) holds roostd.toml when there is one."""
    conf_dir = os.environ.get("CONFIGURATION_DIRECTORY")
    if conf_dir:
        path = Path(conf_dir.split(":")[0]) / "roostd.toml"
        if path.exists():
            return path
    return None


def load(path: str | os.PathLike[str] | None, overrides: dict[str, Any]) -> Config:
    """Build the effective config from the file at `path` (optional) and flag `overrides`."""
    config = Config()
    path = path if path is not None else default_config_file()
    if path is not None:
        try:
            with open(path, "rb") as f:
                table = tomllib.load(f)
        except OSError as e:
            raise InvalidRequest(f"reading config {path}: {e.strerror}") from e
        except tomllib.TOMLDecodeError as e:
            raise InvalidRequest(f"parsing config {path}: {e}") from e
        flat = {SECTION_ALIASES.get(k, k): v for k, v in flatten(table).items()}
        config = config.merge(flat, str(path))
    config = config.merge(overrides, "command line")
    if not config.replication_ack:
        config.replication_ack = "one" if config.peers or config.etcd else "async"
    config.check_endpoints()
    config.check_threads()
    return config
