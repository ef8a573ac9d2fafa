"""`roostd`: start the daemon.

    roostd [--config FILE] [--data-dir DIR] [--listen HOST:PORT] [--metrics-listen HOST:PORT]
           [--node-id NAME] [--peer HOST:PORT]...

Flags override the TOML config file; with no arguments roostd runs on embedded defaults.
SIGTERM (or SIGINT) stops it cleanly: stop accepting requests, stop the workers, record why,
close the store.

This module imports little on purpose: the first thing roostd does, once it has read its
config, is spawn its spare workers (`pool.spawn`), which then import wasmtime and build their
engine while roostd imports the rest of itself (`wiring`). After a restart the executions it
recovers find them warm.
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

from roost.daemon.errors import RoostError
from roost.daemon.executions import pool
from roost.daemon.node import config as config_mod


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="roostd", description="roost daemon: durable WASI executions")
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
    p.add_argument("--log-level", default="INFO")
    return p.parse_args(argv)




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
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    overrides = {"data_dir": args.data_dir, "listen": args.listen,
                 "control_socket": args.control_socket, "node_id": args.node_id,
                 "metrics_listen": args.metrics_listen, "peers": args.peers,
                 "advertise": args.advertise, "tls_ca": args.tls_ca, "tls_cert": args.tls_cert,
                 "tls_key": args.tls_key, "etcd": args.etcd}
    stop = threading.Event()           # (before anything starts: a SIGTERM during start-up
    for sig in (signal.SIGTERM, signal.SIGINT):       # stops the daemon once it is up)
        signal.signal(sig, lambda *_: stop.set())
    try:
        cfg = config_mod.load(args.config, overrides)
        spares = _early_spares(cfg)
        from roost.daemon import gctuning, wiring  # (the heavy imports: after the spawn)
        daemon = wiring.Daemon(cfg, spares)
        daemon.start()
    except (RoostError, OSError) as e:
        print(f"roostd: {e}", file=sys.stderr)
        return 1
    gctuning.freeze_startup_objects()
    # A timed wait: the kernel may deliver SIGTERM to any of roostd's threads, and then
    # nothing interrupts an untimed wait in the main thread, the only one that runs Python's
    # signal handlers (a daemon once ignored a SIGTERM for 30 s that way, in CI).
    while not stop.wait(0.5):
        pass
    daemon.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
