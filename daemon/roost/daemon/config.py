"""roostd configuration: embedded defaults < TOML file (--config) < command-line flags.

A daemon started with no arguments must work on its defaults, so every field has one; the data
directory follows systemd's StateDirectory when run as a service.
"""
from __future__ import annotations

import dataclasses
import os
import socket
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import InvalidRequest

GiB = 1 << 30


def default_data_dir() -> Path:
    """systemd's $STATE_DIRECTORY when set (the unit's StateDirectory=), else a per-user dir."""
    state = os.environ.get("STATE_DIRECTORY")
    if state:
        return Path(state.split(":")[0])
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "roost"


@dataclass
class Config:
    data_dir: Path = field(default_factory=default_data_dir)
    listen: str = "127.0.0.1:7070"
    metrics_listen: str = "127.0.0.1:9464"      # "" disables the metrics endpoint
    node_id: str = field(default_factory=socket.gethostname)
    peers: list[str] = field(default_factory=list)
    memory_limit_bytes: int = 2 * GiB            # default per-execution linear-memory cap
    max_module_bytes: int = 256 * 1024 * 1024
    max_message_bytes: int = 512 * 1024 * 1024   # gRPC messages (mounts travel in StartExecution)
    store_map_size_bytes: int = 256 * GiB        # LMDB map size: address space, not disk
    spare_workers: int = 1                       # pre-started idle workers: fast execution start
    grpc_threads: int = 64                       # each followed log stream holds one
    asyncify_stack_bytes: int = 1 << 20          # per execution: the saved call stack's room
    durable_sleep_seconds: float = 2.0           # longer sleeps checkpoint and release the worker
    checkpoint_every_seconds: float = 60.0       # default period (bounds replay after a crash)
    checkpoint_retain: int = 2                   # checkpoints kept per execution
    cache_dir: Path | None = None                # prepared-module artifacts (default data_dir/cache)
    advertise: str = ""                          # the address peers and clients reach us at (default: listen)
    replication_factor: int = -1                 # peers each execution is replicated to (-1: every peer)
    replication_ack: str = "async"               # async | one | all: what a checkpoint waits for
    migration_downtime_seconds: float = 0.02     # live migration: stop-and-copy when the rest fits
    migration_max_rounds: int = 10               # pre-copy rounds at most
    migration_standby_timeout_seconds: float = 120.0   # a target's standby with no round for this long goes
    tls_ca: str = ""                             # mutual TLS: CA certificate (PEM) peers and
    tls_cert: str = ""                           # clients must be signed by, this daemon's
    tls_key: str = ""                            # certificate and key; all empty: plaintext

    def __post_init__(self) -> None:
        if self.replication_ack not in ("async", "one", "all"):
            raise InvalidRequest(f"replication.ack must be async, one or all, not {self.replication_ack!r}")
        tls = [bool(self.tls_ca), bool(self.tls_cert), bool(self.tls_key)]
        if any(tls) and not all(tls):
            raise InvalidRequest("tls: ca, cert and key are needed together")

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
                   "limits_module_bytes": "max_module_bytes",
                   "limits_message_bytes": "max_message_bytes",
                   "store_map_size_bytes": "store_map_size_bytes",
                   "workers_spares": "spare_workers",
                   "grpc_threads": "grpc_threads",
                   "limits_asyncify_stack_bytes": "asyncify_stack_bytes",
                   "checkpoints_durable_sleep_seconds": "durable_sleep_seconds",
                   "checkpoints_every_seconds": "checkpoint_every_seconds",
                   "checkpoints_retain": "checkpoint_retain",
                   "replication_factor": "replication_factor",
                   "replication_ack": "replication_ack",
                   "migration_downtime_seconds": "migration_downtime_seconds",
                   "migration_max_rounds": "migration_max_rounds",
                   "migration_standby_timeout_seconds": "migration_standby_timeout_seconds",
                   "tls_ca": "tls_ca", "tls_cert": "tls_cert", "tls_key": "tls_key"}


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
    return config.merge(overrides, "command line")
