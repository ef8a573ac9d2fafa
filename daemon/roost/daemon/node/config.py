"""roostd configuration: embedded defaults < TOML file (--config) < command-line flags.

A daemon started with no arguments must work on its defaults, so every field has one; the data
directory follows systemd's StateDirectory when run as a service.

Every value is checked for its type and range as it is read (`SCHEMA`: each TOML key, dotted as
written in the file, with its check; flags go through the same checks): a mistake is one
`ConfigError` line naming the key or the flag, never a value of the wrong type inside the
daemon. Sizes take "256M"-style strings as the CLI does (`parse_size`).
"""
from __future__ import annotations

import dataclasses
import math
import os
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

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
    log_level: str = "INFO"                     # DEBUG, INFO, WARNING, ERROR (SIGHUP reloads it)
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
    # Ended executions (their records, logs, checkpoints, files) are removed this long after
    # they ended (`roost prune` at once); 0 keeps them forever.
    retain_ended_seconds: float = 7 * 86400.0
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

    def http_settings(self) -> HttpSettings:
        """The [http] section checked (InvalidRequest names what is wrong)."""
        return http_settings(self.http_allow, self.http_timeout_seconds,
                             self.http_connect_timeout_seconds, self.http_retries,
                             self.http_max_response_bytes, self.http_ca_bundle)

    def check_threads(self) -> None:
        """Long-polls leave threads for everything else (`longpolls`)."""
        if not 1 <= self.long_polls <= self.grpc_threads - 8:
            raise ConfigError(f"grpc.long_polls ({self.long_polls}) must leave at least 8 of "
                                 f"grpc.threads ({self.grpc_threads}) to other calls")
        if not 1 <= self.long_polls_per_client <= self.long_polls:
            raise ConfigError("grpc.long_polls_per_client must be from 1 to grpc.long_polls")

    def check_endpoints(self) -> None:
        """The effective config listens somewhere, and on TCP if it has peers."""
        if not self.listen and not self.control_socket:
            raise ConfigError("nothing to listen on: set listen (HOST:PORT, --listen) or "
                              "control_socket (--control-socket)")
        if (self.peers or self.etcd) and not self.listen:
            raise ConfigError("peers and cluster.etcd need listen = \"HOST:PORT\" (--listen): "
                              "other daemons reach this one over TCP")

    @property
    def address(self) -> str:
        """Where others reach this daemon."""
        return self.advertise or self.listen


class ConfigError(Exception):
    """A configuration mistake an operator made, in one line naming the flag or the TOML key
    as written (`limits.memory_bytes`, `--listen`): roostd exits 2 on it at start, and keeps
    its running config when a reload (SIGHUP) meets one. (Not a RoostError: no client ever
    receives one.)"""


class _Bad(ValueError):
    """What is wrong with one value; the caller names its key. `at` locates it inside a
    list ("[2]")."""

    def __init__(self, message: str, at: str = "") -> None:
        super().__init__(message)
        self.at = at


Check = Callable[[Any], Any]
MiB = 1 << 20
YEAR = 365 * 86400.0
_SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*$", re.IGNORECASE)   # (as the CLI's)
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _got(value: Any) -> str:
    """How a wrong value is named in an error: its TOML type, and itself when short."""
    kinds = ((bool, "a boolean"), (int, "an integer"), (float, "a number"), (str, "a string"),
             (list, "a list"), (dict, "a table"))
    kind = next((name for t, name in kinds if isinstance(value, t)), type(value).__name__)
    if isinstance(value, (list, dict)):
        return kind
    shown = repr(value) if not isinstance(value, bool) else str(value).lower()
    return f"{kind} ({shown})" if len(shown) <= 40 else kind


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise _Bad(f"expected a string, got {_got(value)}")
    return value


def _path(value: Any) -> Path:
    if not isinstance(value, str) or not value:
        raise _Bad(f"expected a path (a non-empty string), got {_got(value)}")
    return Path(value)


def _address(empty_ok: bool, port_zero_ok: bool = False) -> Check:
    """HOST:PORT (an IPv6 host in brackets); "" too when `empty_ok` (off); port 0 (the kernel
    picks a free one) when `port_zero_ok`: an address to listen on, not to dial."""
    def check(value: Any) -> str:
        if not isinstance(value, str):
            raise _Bad(f"expected a \"HOST:PORT\" string, got {_got(value)}")
        if value == "" and empty_ok:
            return value
        host, sep, port = value.rpartition(":")
        if value.isdigit():
            raise _Bad(f"expected HOST:PORT, got {value!r}: no host (127.0.0.1:{value} for this "
                       f"host only, 0.0.0.0:{value} for every interface)")
        if not sep or not host or host == "[]" or any(c.isspace() for c in value):
            raise _Bad(f"expected HOST:PORT, got {value!r}")
        lowest = 0 if port_zero_ok else 1
        if not port.isdigit() or not lowest <= int(port) <= 65535:
            raise _Bad(f"expected HOST:PORT, got {value!r}: the port must be a number from {lowest} to 65535")
        return value
    return check


def _list(item: Check, what: str) -> Check:
    """A list (a TOML array, or a repeated flag) of items."""
    def check(value: Any) -> list[Any]:
        if not isinstance(value, list):
            raise _Bad(f"expected a list of {what}, got {_got(value)}")
        out = []
        for i, element in enumerate(value):
            try:
                out.append(item(element))
            except _Bad as e:
                raise _Bad(str(e), f"[{i}]") from None
        return out
    return check


def _url(value: Any) -> str:
    """An etcd endpoint: http(s)://HOST:PORT."""
    if not isinstance(value, str):
        raise _Bad(f"expected an \"http://HOST:PORT\" string, got {_got(value)}")
    parts = urlsplit(value)
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme not in ("http", "https") or not parts.hostname or port is None:
        raise _Bad(f"expected http://HOST:PORT or https://HOST:PORT, got {value!r}")
    return value


def _integer(lo: int, hi: int) -> Check:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Bad(f"expected an integer from {lo} to {hi}, got {_got(value)}")
        if not lo <= value <= hi:
            raise _Bad(f"expected an integer from {lo} to {hi}, got {value}")
        return value
    return check


def parse_size(value: Any) -> int:
    """A size: an integer of bytes, or a string with a binary unit as the CLI takes them
    ("64K", "256M", "1.5G", "2GiB": K, M, G, T are powers of 1024, "MB" reads as "MiB")."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    match = _SIZE_RE.match(value) if isinstance(value, str) else None
    if match is None:
        raise _Bad(f"expected a size (bytes, or a string like \"256M\" or \"2G\"), got {_got(value)}")
    number, unit = match.groups()
    return int(float(number) * _SIZE_UNITS[unit.upper()])


def _size(lo: int, hi: int) -> Check:
    def check(value: Any) -> int:
        size = parse_size(value)
        if not lo <= size <= hi:
            raise _Bad(f"expected a size from {lo} to {hi} bytes, got {_got(value)}")
        return size
    return check


def _seconds(lo: float, hi: float, lo_open: bool = False) -> Check:
    """A duration in seconds: an integer or a number, finite, in [lo, hi] (or (lo, hi])."""
    def check(value: Any) -> float:
        low = "(" if lo_open else "["
        what = f"a number of seconds in {low}{lo:g}, {hi:g}]"
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _Bad(f"expected {what}, got {_got(value)}")
        if not math.isfinite(value) or value < lo or value > hi or (lo_open and value == lo):
            raise _Bad(f"expected {what}, got {value}")
        return float(value)
    return check


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _Bad(f"expected true or false, got {_got(value)}")
    return value


def _choice(*choices: str) -> Check:
    def check(value: Any) -> str:
        if not isinstance(value, str) or value not in choices:
            raise _Bad(f"expected one of {', '.join(choices)}, got {_got(value)}")
        return value
    return check


def _log_level(value: Any) -> str:
    if not isinstance(value, str) or value.upper() not in LOG_LEVELS:
        raise _Bad(f"expected one of {', '.join(LOG_LEVELS)}, got {_got(value)}")
    return value.upper()


def _tables(value: Any) -> list[Any]:
    """[[http.allow]]: a list of tables (each entry is checked by `http.settings`)."""
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise _Bad(f"expected [[http.allow]] tables, got {_got(value)}")
    return value


_positive = _integer(1, 1 << 62)
_bytes = _size(1, 1 << 62)
_address_or_off = _address(empty_ok=True)
_listen_or_off = _address(empty_ok=True, port_zero_ok=True)

# Every TOML key, dotted as written in the file -> (Config field, its check). A key not
# here is an error (with the closest one suggested); so is a value its check refuses.
SCHEMA: dict[str, tuple[str, Check]] = {
    "data_dir": ("data_dir", _path),
    "cache_dir": ("cache_dir", _path),
    "control_socket": ("control_socket", _text),
    "control_socket_group": ("control_socket_group", _text),
    "listen": ("listen", _listen_or_off),
    "metrics_listen": ("metrics_listen", _listen_or_off),
    "advertise": ("advertise", _address_or_off),
    "node_id": ("node_id", _text),
    "peers": ("peers", _list(_address(empty_ok=False), "HOST:PORT strings")),
    "log_level": ("log_level", _log_level),
    "spare_workers": ("spare_workers", _integer(0, 256)),
    "workers.spares": ("spare_workers", _integer(0, 256)),
    "limits.memory_bytes": ("memory_limit_bytes", _size(64 * 1024, 4 * GiB)),
    "limits.max_memory_bytes": ("max_memory_limit_bytes", _size(64 * 1024, 4 * GiB)),
    "limits.executions": ("max_executions", _integer(1, 1 << 20)),
    "limits.memory_total_bytes": ("max_memory_total_bytes", _size(64 * 1024, 1 << 62)),
    "limits.vfs_bytes": ("vfs_limit_bytes", _bytes),
    "limits.vfs_inodes": ("vfs_inodes", _positive),
    "limits.links": ("links_per_inode", _positive),
    "limits.output_bytes": ("output_limit_bytes", _bytes),
    "limits.module_bytes": ("max_module_bytes", _bytes),
    "limits.message_bytes": ("max_message_bytes", _size(MiB, (1 << 31) - 1)),
    "limits.asyncify_stack_bytes": ("asyncify_stack_bytes", _size(4096, GiB)),
    "store.map_size_bytes": ("store_map_size_bytes", _size(MiB, 1 << 50)),
    "grpc.threads": ("grpc_threads", _integer(9, 100_000)),
    "grpc.long_polls": ("long_polls", _integer(1, 100_000)),
    "grpc.long_polls_per_client": ("long_polls_per_client", _integer(1, 100_000)),
    "modules.run_unprepared": ("run_unprepared", _boolean),
    "modules.prepared_wait_seconds": ("prepared_wait_seconds", _seconds(0, 3600)),
    "modules.safepoint_budget_seconds": ("safepoint_budget_seconds", _seconds(0, 60)),
    "checkpoints.durable_sleep_seconds": ("durable_sleep_seconds", _seconds(0, YEAR)),
    "checkpoints.every_seconds": ("checkpoint_every_seconds", _seconds(0, YEAR)),
    "checkpoints.retain": ("checkpoint_retain", _integer(1, 1000)),
    "executions.retain_ended_seconds": ("retain_ended_seconds", _seconds(0, 100 * YEAR)),
    "replication.factor": ("replication_factor", _integer(-1, 1000)),
    "replication.ack": ("replication_ack", _choice("async", "one", "all")),
    "cluster.etcd": ("etcd", _list(_url, "\"http://HOST:PORT\" strings")),
    "cluster.lease_seconds": ("lease_seconds", _integer(1, 3600)),
    "migration.downtime_seconds": ("migration_downtime_seconds", _seconds(0, 60, lo_open=True)),
    "migration.max_rounds": ("migration_max_rounds", _integer(0, 1000)),
    "migration.standby_timeout_seconds": ("migration_standby_timeout_seconds",
                                          _seconds(0, YEAR, lo_open=True)),
    "tls.ca": ("tls_ca", _text),
    "tls.cert": ("tls_cert", _text),
    "tls.key": ("tls_key", _text),
    "http.allow": ("http_allow", _tables),
    "http.timeout_seconds": ("http_timeout_seconds", _seconds(0, 3600, lo_open=True)),
    "http.connect_timeout_seconds": ("http_connect_timeout_seconds", _seconds(0, 3600, lo_open=True)),
    "http.retries": ("http_retries", _integer(0, 10)),
    "http.max_response_bytes": ("http_max_response_bytes", _bytes),
    "http.ca_bundle": ("http_ca_bundle", _text),
}
SECTIONS = frozenset(key.rpartition(".")[0] for key in SCHEMA if "." in key)
KEY_OF = {name: key for key, (name, _) in reversed(list(SCHEMA.items()))}   # field -> its key
CHECK_OF = {name: check for name, check in SCHEMA.values()}

# The flags that override a config field (`roostd --help`), named in their errors.
FLAGS = {"data_dir": "--data-dir", "listen": "--listen", "control_socket": "--control-socket",
         "node_id": "--node-id", "metrics_listen": "--metrics-listen", "peers": "--peer",
         "advertise": "--advertise", "tls_ca": "--tls-ca", "tls_cert": "--tls-cert",
         "tls_key": "--tls-key", "etcd": "--etcd", "log_level": "--log-level"}

# Config field -> its key in the TOML [limits] section (named in errors and pause reasons).
GUEST_LIMIT_KEYS = {"vfs_limit_bytes": "vfs_bytes", "vfs_inodes": "vfs_inodes",
                    "links_per_inode": "links", "output_limit_bytes": "output_bytes"}


def _checked(check: Check, value: Any, where: str) -> Any:
    """`value` as `check` returns it; ConfigError "WHERE: what is wrong" otherwise."""
    try:
        return check(value)
    except _Bad as e:
        at = "" if where.startswith("--") else e.at       # (a repeated flag: no index)
        raise ConfigError(f"{where}{at}: {e}") from None


def _suggest(key: str) -> str:
    """ " (did you mean X?)" for a typo'd key: its closest known key, or a key of another
    section with the same name (`cluster.peers` -> `peers`)."""
    import difflib  # (a mistake's path: not every start's)
    close = difflib.get_close_matches(key, list(SCHEMA), n=1, cutoff=0.75)
    leaf = key.rpartition(".")[2]
    same = [k for k in SCHEMA if k.rpartition(".")[2] == leaf]
    match = close[0] if close else (same[0] if len(same) == 1 else "")
    return f" (did you mean {match}?)" if match else ""


def from_toml(table: dict[str, Any], origin: str) -> dict[str, Any]:
    """The fields a parsed TOML file sets, each checked; ConfigError "ORIGIN: KEY: ..."
    names a wrong or unknown key as written in the file (dotted)."""
    fields: dict[str, Any] = {}

    def walk(section: dict[str, Any], prefix: str) -> None:
        for name, value in section.items():
            key = prefix + name
            if key in SCHEMA:
                field_name, check = SCHEMA[key]
                fields[field_name] = _checked(check, value, f"{origin}: {key}")
            elif key in SECTIONS and isinstance(value, dict):
                walk(value, key + ".")
            elif key in SECTIONS:
                raise ConfigError(f"{origin}: {key}: expected a table ([{key}]), got {_got(value)}")
            else:
                raise ConfigError(f"{origin}: unknown key {key}{_suggest(key)}")
    walk(table, "")
    return fields


def from_flags(overrides: dict[str, Any]) -> dict[str, Any]:
    """The fields command-line flags set (None: not given), each checked; ConfigError
    names the flag."""
    fields: dict[str, Any] = {}
    for name, value in overrides.items():
        if value is None:
            continue
        if name not in CHECK_OF:
            raise ConfigError(f"unknown setting {name!r}")
        flag = FLAGS.get(name, "--" + name.replace("_", "-"))
        fields[name] = _checked(CHECK_OF[name], value, flag)
    return fields


def check_together(config: Config) -> None:
    """What single keys cannot say: settings that need each other."""
    tls = [bool(config.tls_ca), bool(config.tls_cert), bool(config.tls_key)]
    if any(tls) and not all(tls):
        raise ConfigError("tls.ca, tls.cert and tls.key (--tls-ca, --tls-cert, --tls-key) are "
                          "needed together")
    if config.memory_limit_bytes > config.max_memory_limit_bytes:
        raise ConfigError(f"limits.memory_bytes ({config.memory_limit_bytes}) exceeds "
                          f"limits.max_memory_bytes ({config.max_memory_limit_bytes})")
    config.check_endpoints()
    config.check_threads()


def default_config_file() -> Path | None:
    """systemd's ConfigurationDirectory= (/etc/roost) holds roostd.toml when there is one."""
    conf_dir = os.environ.get("CONFIGURATION_DIRECTORY")
    if conf_dir:
        path = Path(conf_dir.split(":")[0]) / "roostd.toml"
        if path.exists():
            return path
    return None


def read_toml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The parsed file; ConfigError naming it (and the line, for a syntax error)."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read it: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None


def load(path: str | os.PathLike[str] | None, overrides: dict[str, Any]) -> Config:
    """Build the effective config from the file at `path` (optional) and flag `overrides`,
    every value checked; ConfigError names the first mistake."""
    path = path if path is not None else default_config_file()
    fields: dict[str, Any] = {}
    if path is not None:
        fields = from_toml(read_toml(path), str(path))
    fields.update(from_flags(overrides))
    config = dataclasses.replace(Config(), **fields)
    if not config.replication_ack:
        config.replication_ack = "one" if config.peers or config.etcd else "async"
    check_together(config)
    try:
        config.http_settings()
    except InvalidRequest as e:
        raise ConfigError(f"{path}: {e}" if path is not None else str(e)) from None
    return config
