"""SIGHUP: roostd re-reads its config and applies what can change while it runs.

The file is read again with the same command-line flags on top (they still override it), and
checked as at start (`config.load`). A file with a mistake changes nothing: the error is
logged and the running config kept — the daemon and its executions go on either way.

What applies at once (`RUNTIME`): the log level, the static peer list (`peers`: whom the Peer
API admits in plaintext, where replicas go), the limits new executions are admitted and started
with (`limits.*` but the module, message and stack sizes), the periodic checkpoint and
durable-sleep defaults of new starts, the retention of ended executions, outbound HTTP settings
of new launches, and the TLS certificates (while TLS stays on): read again even
when their paths did not change (the usual rotation rewrites the files), they serve every new
connection (`ServerCerts`, gRPC's dynamic server credentials). Running executions keep the
memory and file limits they started with; the output quota is checked as output arrives, so a
raised one lets an execution it paused be resumed. Anything else that changed is named in one line as needing a restart.
Each applied change is one line: `reloaded: log_level INFO -> DEBUG`.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
from typing import TYPE_CHECKING, Any

import grpc

from roost.daemon.cluster import tls
from roost.daemon.errors import InvalidRequest
from roost.daemon.node import config as config_mod
from roost.daemon.node import logsetup

if TYPE_CHECKING:
    from roost.daemon.wiring import Daemon

log = logging.getLogger("roostd")

# The config fields a reload applies to the running daemon (`Daemon.reload`).
RUNTIME = frozenset({
    "log_level", "peers",
    "memory_limit_bytes", "max_memory_limit_bytes", "max_executions", "max_memory_total_bytes",
    "vfs_limit_bytes", "vfs_inodes", "links_per_inode", "output_limit_bytes",
    "checkpoint_every_seconds", "durable_sleep_seconds", "retain_ended_seconds",
    "http_allow", "http_timeout_seconds", "http_connect_timeout_seconds", "http_retries",
    "http_max_response_bytes", "http_ca_bundle",
    "tls_ca", "tls_cert", "tls_key",
})


class ServerCerts:
    """The gRPC server's TLS certificates, replaceable while it serves: gRPC asks for them at
    each new handshake (`dynamic_ssl_server_credentials`), and gets the new ones once after a
    reload. Connections already open keep theirs."""

    def __init__(self, credentials: tls.Credentials) -> None:
        self._lock = threading.Lock()
        self._current = credentials
        self._fresh: grpc.ServerCertificateConfiguration | None = None

    @staticmethod
    def _configuration(credentials: tls.Credentials) -> grpc.ServerCertificateConfiguration:
        return grpc.ssl_server_certificate_configuration([(credentials.key, credentials.cert)],
                                                         root_certificates=credentials.ca)

    def server_credentials(self) -> grpc.ServerCredentials:
        """For `add_secure_port`: mutual TLS (a client certificate is required)."""
        return grpc.dynamic_ssl_server_credentials(self._configuration(self._current), self._fetch,
                                                   require_client_authentication=True)

    def _fetch(self) -> grpc.ServerCertificateConfiguration | None:
        with self._lock:
            fresh, self._fresh = self._fresh, None
            return fresh

    def replace(self, credentials: tls.Credentials) -> None:
        with self._lock:
            self._current = credentials
            self._fresh = self._configuration(credentials)


@dataclasses.dataclass(frozen=True)
class Change:
    """One setting whose value differs between the running config and the file's."""
    field: str
    old: Any
    new: Any

    @property
    def key(self) -> str:
        """As the operator writes it: the TOML key (dotted)."""
        return config_mod.KEY_OF.get(self.field, self.field)

    def __str__(self) -> str:
        return f"{self.key} {_shown(self.old)} -> {_shown(self.new)}"


def _shown(value: Any) -> str:
    return f'"{value}"' if value == "" else str(value)


def changes(old: config_mod.Config, new: config_mod.Config) -> list[Change]:
    """The settings that differ (a node id left to the certificate or the data dir is the
    running one's)."""
    if not new.node_id:
        new.node_id = old.node_id
    return [Change(f.name, getattr(old, f.name), getattr(new, f.name))
            for f in dataclasses.fields(old) if getattr(old, f.name) != getattr(new, f.name)]


def _new_credentials(daemon: Daemon, new: config_mod.Config) -> tls.Credentials | None:
    """The TLS files read again when the daemon serves TLS and the new config keeps it on;
    None when they are byte for byte what it serves. InvalidRequest: unreadable, or a
    certificate naming another node."""
    current = daemon.credentials
    if current is None or not new.tls_ca:
        return None
    fresh = tls.Credentials(new.tls_ca, new.tls_cert, new.tls_key)
    if (fresh.ca, fresh.cert, fresh.key) == (current.ca, current.cert, current.key):
        return None
    named = fresh.node_id(new.tls_cert)
    if named and named != daemon.cfg.node_id:
        raise InvalidRequest(f"{new.tls_cert} names node {named!r}, not this daemon's "
                             f"{daemon.cfg.node_id!r}: its peers would take it for another")
    return fresh


def reload(daemon: Daemon, path: str | None, overrides: dict[str, Any]) -> bool:
    """Re-read the config (flags still override it) and apply what can change at run time;
    False (logged, nothing changed) when the new config has a mistake."""
    try:
        new = config_mod.load(path, overrides)
        credentials = _new_credentials(daemon, new)
    except (config_mod.ConfigError, InvalidRequest) as e:
        log.error("reload refused, the running config is kept: %s", e)
        return False
    found = changes(daemon.cfg, new)
    tls_on_off = bool(daemon.credentials) != bool(new.tls_ca)
    applied = [c for c in found if c.field in RUNTIME and not (c.field.startswith("tls_") and tls_on_off)]
    later = [c for c in found if c not in applied]
    if any(c.field == "log_level" for c in applied):
        logsetup.set_level(new.log_level)
    # (the running config with only the applied changes: `Daemon.reload` takes RUNTIME's fields)
    daemon.reload(dataclasses.replace(daemon.cfg, **{c.field: c.new for c in applied}), credentials)
    for change in applied:
        log.info("reloaded: %s", change)
    if credentials is not None:
        log.info("reloaded: tls certificates (new connections use them)")
    if later:
        log.warning("changed but needs a restart to apply: %s", ", ".join(c.key for c in later))
    if not applied and not later and credentials is None:
        log.info("reloaded: nothing changed")
    return True
