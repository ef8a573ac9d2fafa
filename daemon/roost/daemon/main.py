"""`roostd`: start the daemon.

    roostd [--config FILE] [--data-dir DIR] [--listen HOST:PORT] [--metrics-listen HOST:PORT]
           [--node-id NAME] [--peer HOST:PORT]... [--log-level LEVEL] [--version]

Flags override the TOML config file; with no arguments roostd runs on embedded defaults.
SIGTERM (or SIGINT) stops it cleanly: stop accepting requests, stop the workers, record why,
close the store. SIGHUP re-reads the config and applies what can change while it runs
(`node.reload`); executions go on.

Exit codes: 0 after a clean stop; 2 for a mistake in the flags or the config (one line naming
the flag or the TOML key: `node.config`); 1 when roostd cannot run as configured (an address
already in use, a data dir held by another roostd, an unwritable directory). Nothing an
operator can get wrong prints a traceback.

This module imports little on purpose: the first thing roostd does, once it has read its
config, is spawn its spare workers (`pool.spawn`), which then import wasmtime and build their
engine while roostd imports the rest of itself (`wiring`). After a restart the executions it
recovers find them warm.
"""
from __future__ import annotations

import argparse
import errno
import logging
import signal
import socket
import sys
import threading
from pathlib import Path
from typing import Any, NoReturn

from roost.daemon.errors import InvalidRequest, RoostError
from roost.daemon.executions import pool
from roost.daemon.node import config as config_mod
from roost.daemon.node import logsetup

EXIT_RUNTIME = 1       # roostd cannot run as configured
EXIT_USAGE = 2         # a mistake in the flags or the config (argparse's code too)

log = logging.getLogger("roostd")


def version() -> str:
    """The installed distribution's version (a source tree without metadata: 0.0.0+unknown).
    Read only when asked: finding a distribution's metadata costs a start ~40 ms."""
    import importlib.metadata
    try:
        return importlib.metadata.version("roost")
    except importlib.metadata.PackageNotFoundError:
        return "0.0.0+unknown"


class _VersionAction(argparse.Action):
    """`--version`, with the version looked up only when the flag is given."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> None:
        print(f"roostd {version()}")
        parser.exit()


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage mistake in one line (as every other roostd error) and exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see {self.prog} --help)\n")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = _Parser(prog="roostd", description="roost daemon: durable WASI executions")
    p.add_argument("--version", action=_VersionAction, help="print roostd's version and exit")
    p.add_argument("--config", help="TOML config file (flags override it)")
    p.add_argument("--data-dir", help="where the LMDB store and module cache live")
    p.add_argument("--listen", help="TCP HOST:PORT for the Control and Peer APIs (default: none; "
                   "peers and remote clients need it)")
    p.add_argument("--control-socket", help="the Control API's Unix socket (default "
                   "/run/roost/roostd.sock for root, else $XDG_RUNTIME_DIR/roost/roostd.sock; "
                   "'' disables it)")
    p.add_argument("--metrics-listen", help="Prometheus /metrics HOST:PORT (default 127.0.0.1:9464; '' disables)")
    p.add_argument("--node-id", help="this daemon's name in a cluster, unique among its peers "
                   "(default: the one its TLS certificate names, else <hostname>-<random> made "
                   "once and kept in the data dir)")
    p.add_argument("--peer", action="append", dest="peers", help="a peer roostd HOST:PORT (repeatable)")
    p.add_argument("--etcd", action="append", help="an etcd endpoint http://HOST:PORT "
                   "(repeatable): membership, ownership and automatic takeover (config "
                   "cluster.etcd)")
    p.add_argument("--advertise", help="the HOST:PORT peers and clients reach this daemon at (default: --listen)")
    p.add_argument("--tls-ca", help="mutual TLS: the CA certificate (PEM) peers and clients must be signed by")
    p.add_argument("--tls-cert", help="mutual TLS: this daemon's certificate (PEM)")
    p.add_argument("--tls-key", help="mutual TLS: this daemon's private key (PEM)")
    p.add_argument("--log-level", help="DEBUG, INFO, WARNING or ERROR (default: the config's "
                   "log_level, else INFO; SIGHUP reloads the config's)")
    return p.parse_args(argv)


def overrides_of(args: argparse.Namespace) -> dict[str, Any]:
    """The config fields the flags set (None: not given); a reload applies them again."""
    return {"data_dir": args.data_dir, "listen": args.listen,
            "control_socket": args.control_socket, "node_id": args.node_id,
            "metrics_listen": args.metrics_listen, "peers": args.peers,
            "advertise": args.advertise, "tls_ca": args.tls_ca, "tls_cert": args.tls_cert,
            "tls_key": args.tls_key, "etcd": args.etcd, "log_level": args.log_level}


class AddressInUse(OSError):
    """An address roostd is configured to listen on cannot be bound now (another process
    listens there, most often)."""


def probe_listen(cfg: config_mod.Config) -> None:
    """Bind each configured TCP address once, before anything starts, so that one in use or
    not this host's is one line naming it and its setting (gRPC would log its own error
    lines first, and the metrics server an errno)."""
    try:
        for key, address in (("listen", cfg.listen), ("metrics_listen", cfg.metrics_listen)):
            if address:
                _probe(address, f"{key} / --{key.replace('_', '-')}")
    except AddressInUse:
        _check_data_dir_free(cfg.data_dir)   # (a second roostd on one data dir: say that)
        raise


def _check_data_dir_free(data_dir: Path) -> None:
    """StateConflict naming the roostd that holds `data_dir`, if one does: the likelier
    reason why its address is in use too, and the one to tell."""
    from roost.daemon.node import datadir  # (an error path: not on every start's)
    if (data_dir / datadir.LOCK_FILE).exists():
        datadir.DataDirLock(data_dir).release()


def _probe(address: str, setting: str) -> None:
    host, _, port = address.rpartition(":")
    try:
        infos = socket.getaddrinfo(host.strip("[]"), int(port), type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise config_mod.ConfigError(f"{setting}: cannot resolve {host!r}: {e.strerror}") from None
    failures = [e for e in map(_bind_error, infos) if e is not None]
    if any(e.errno == errno.EADDRINUSE for e in failures):
        raise AddressInUse(f"cannot listen on {address} ({setting}): the address is already in "
                           "use (by another process)")
    if failures and len(failures) == len(infos):         # (gRPC binds what it can of the rest)
        if all(e.errno == errno.EADDRNOTAVAIL for e in failures):
            raise config_mod.ConfigError(f"{setting}: cannot listen on {address}: it is not an "
                                         "address of this host")
        raise AddressInUse(f"cannot listen on {address} ({setting}): {failures[0].strerror}")


def _bind_error(info: tuple[Any, ...]) -> OSError | None:
    """Why one resolved address cannot be bound now (None: it can)."""
    family, kind, proto, _, sockaddr = info
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)      # (as gRPC binds)
        try:
            s.bind(sockaddr)
        except OSError as e:
            return e
    return None


def _early_spares(cfg: config_mod.Config) -> list[pool.WorkerProcess]:
    """The configured spare workers, spawned now (from the main thread, which lives as long as
    roostd: a worker dies with the thread that spawned it, `lifeline`)."""
    spares = []
    for _ in range(cfg.spare_workers):
        try:
            spares.append(pool.spawn())
        except OSError as e:             # (the pool tries again, and logs it)
            logging.getLogger("roostd").warning("cannot start a spare worker: %s", e)
            break
    return spares


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from roost.daemon import requirements  # (after --help/--version: they need none)
    requirements.check()                   # one line and exit 1 without roost[daemon]
    overrides = overrides_of(args)
    stop, hup = threading.Event(), threading.Event()
    # (before anything starts: a SIGTERM during start-up stops the daemon once it is up, a
    # SIGHUP reloads it then)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    signal.signal(signal.SIGHUP, lambda *_: hup.set())
    try:
        cfg = config_mod.load(args.config, overrides)
        logsetup.configure(cfg.log_level)
        probe_listen(cfg)
        spares = _early_spares(cfg)
        from roost.daemon import gctuning, wiring  # (the heavy imports: after the spawn)
        from roost.daemon.node import reload
        daemon = wiring.Daemon(cfg, spares)
        daemon.start()
    except (config_mod.ConfigError, InvalidRequest) as e:     # (InvalidRequest: a TLS file,
        # the node id a certificate names)
        print(f"roostd: {e}", file=sys.stderr)
        return EXIT_USAGE
    except (RoostError, OSError) as e:
        print(f"roostd: {_one_line(e)}", file=sys.stderr)
        return EXIT_RUNTIME
    gctuning.freeze_startup_objects()
    # A timed wait: the kernel may deliver SIGTERM to any of roostd's threads, and then
    # nothing interrupts an untimed wait in the main thread, the only one that runs Python's
    # signal handlers (a daemon once ignored a SIGTERM for 30 s that way, in CI).
    while not stop.wait(0.5):
        if hup.is_set():
            hup.clear()
            _reload(reload, daemon, args.config, overrides)
    daemon.stop()
    return 0


def _reload(reload: Any, daemon: Any, path: str | None, overrides: dict[str, Any]) -> None:
    """SIGHUP: never the end of the daemon, whatever the reload meets."""
    log.info("SIGHUP: reloading the config")
    try:
        reload.reload(daemon, path, overrides)
    except Exception:
        log.exception("reload failed; the running config is kept")


def _one_line(e: BaseException) -> str:
    """An OSError as "PATH: reason" (its repr-like str is `[Errno 13] Permission denied: 'x'`)."""
    if isinstance(e, OSError) and e.strerror:
        return f"{e.filename}: {e.strerror}" if e.filename else e.strerror
    return str(e).splitlines()[0] if str(e) else type(e).__name__


if __name__ == "__main__":
    sys.exit(main())
