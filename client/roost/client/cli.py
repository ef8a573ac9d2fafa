"""The `roost` command line: argument parsing and the one place errors become exit codes.

The subcommands themselves live in `commands`; this module never lets a traceback reach
the user.
"""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from roost.client import commands
from roost.client.api import TLS, Client, default_addr
from roost.client.display import parse_size
from roost.client.errors import LocalError, RoostClientError
from roost.client.mounts import parse_mount_spec

EXIT_BROKEN_PIPE = 141


def parse_env(item: str) -> tuple[str, str]:
    """K=V -> (K, V), split at the first '='; the value may be empty or hold '='."""
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise LocalError(f"bad --env {item!r}: expected KEY=VALUE")
    return key, value


def _arg(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """Adapts a parser that raises LocalError to argparse, which reports it as a usage error."""

    def convert(text: str) -> Any:
        try:
            return parse(text)
        except LocalError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    convert.__name__ = parse.__name__
    return convert


def _common_options() -> argparse.ArgumentParser:
    """--addr and --json, accepted before or after the subcommand."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--addr", default=argparse.SUPPRESS, help="roostd address HOST:PORT")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON")
    return common


def _add_run(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    run = sub.add_parser("run", parents=[common], help="run a module as a durable execution")
    run.add_argument("--detach", "-d", action="store_true", help="print the id and return")
    run.add_argument("--name", help="a name for the execution")
    run.add_argument("--argv0", help="the guest's argv[0] (default: module file name)")
    run.add_argument("--env", "-e", action="append", default=[], type=_arg(parse_env), metavar="K=V")
    run.add_argument("--stdin", metavar="FILE", help="file whose bytes are the guest's stdin")
    run.add_argument(
        "--mount", action="append", default=[], type=_arg(parse_mount_spec), metavar="HOSTDIR:GUESTDIR"
    )
    mode = run.add_mutually_exclusive_group()
    mode.add_argument("--preempt", dest="cooperative", action="store_false", help="default")
    mode.add_argument("--cooperative", dest="cooperative", action="store_true")
    run.set_defaults(cooperative=False)  # store_false alone would default to True
    run.add_argument("--checkpoint-every", type=float, metavar="SECONDS")
    run.add_argument("--memory-limit", type=_arg(parse_size), metavar="BYTES", help="e.g. 256M, 1G")
    run.add_argument("--allow-http", action="append", default=[], metavar="PREFIX",
                     help="let the guest send HTTP requests under PREFIX "
                          "(scheme://host[:port]/path/; within the daemon's [[http.allow]]); "
                          "repeatable")
    run.add_argument("--place", metavar="auto|NODE",
                     help="run on a member of the cluster: auto (the least loaded healthy one), "
                          "a node id or HOST:PORT (default: the daemon asked)")
    run.add_argument("module", metavar="MODULE.wasm")
    run.add_argument("args", nargs="*", metavar="ARGS", help="guest arguments, after --")


def _add_one_id(sub: argparse._SubParsersAction, common: argparse.ArgumentParser, name: str, text: str):
    parser = sub.add_parser(name, parents=[common], help=text)
    parser.add_argument("id", metavar="ID")
    return parser


def _add_execution_commands(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    sub.add_parser("nodes", parents=[common], help="list the cluster's members (* : this one)")
    ps = sub.add_parser("ps", parents=[common], help="list executions")
    ps.add_argument("-a", "--all", action="store_true", help="include ended executions")
    ps.add_argument("--all-nodes", action="store_true",
                    help="every member's executions, each where it runs (a NODE column)")
    _add_one_id(sub, common, "inspect", "show one execution")
    logs = _add_one_id(sub, common, "logs", "replay an execution's output")
    logs.add_argument("-f", "--follow", action="store_true")
    which = logs.add_mutually_exclusive_group()
    which.add_argument("--stdout", action="store_true", help="only stdout")
    which.add_argument("--stderr", action="store_true", help="only stderr")
    _add_one_id(sub, common, "wait", "wait for an execution to end; exit with its code")
    _add_one_id(sub, common, "kill", "kill an execution")
    cp = sub.add_parser("cp", parents=[common], help="copy a file or tree out of an execution")
    cp.add_argument("source", type=_arg(commands.split_copy_source), metavar="ID:GUESTPATH")
    cp.add_argument("dest", metavar="LOCALPATH")
    cp.add_argument("--unsafe-links", action="store_true",
                    help="also make symlinks that point outside the copied tree (absolute or "
                         "climbing out with '..'); by default they are skipped with a warning")


def _add_later_commands(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    modules = sub.add_parser("modules", parents=[common], help="list uploaded modules")
    prepare_sub = modules.add_subparsers(dest="modules_command", metavar="[prepare]")
    prepare = prepare_sub.add_parser("prepare", parents=[common],
                                     help="upload a module and prepare it ahead of its first run")
    prepare.add_argument("module", metavar="MODULE.wasm")
    _add_one_id(sub, common, "checkpoint", "checkpoint an execution now (it keeps running)")
    _add_one_id(sub, common, "pause", "checkpoint an execution and stop it until resume")
    _add_one_id(sub, common, "resume", "continue a paused execution from its checkpoint")
    migrate = _add_one_id(sub, common, "migrate",
                          "move a running execution to another roostd (live unless --cold)")
    migrate.add_argument("--to", metavar="NODE|HOST:PORT", required=True,
                         help="the target roostd: a node id (as `roost nodes` lists) or its address")
    migrate.add_argument("--cold", action="store_true",
                         help="stop, checkpoint, transfer, resume (no pre-copy while it runs)")
    migrate.add_argument("--downtime-ms", type=float, metavar="MS",
                         help="live: stop-and-copy once the rest fits this (default: the daemon's)")
    recover = _add_one_id(sub, common, "recover", "without etcd: run the replica on NODE of "
                          "an execution whose owner is gone for good")
    recover.add_argument("--on", metavar="NODE|HOST:PORT", required=True,
                         help="the daemon holding the replica (a node id or its address)")
    sub.add_parser("sdk-path", parents=[common],
                   help="print the folder of roost's guest SDK (c/roost.h, python/, js/)")
    drain = sub.add_parser("drain", parents=[common],
                           help="move every running execution of a node to the other members")
    drain.add_argument("node", metavar="NODE", help="a node id (or its HOST:PORT)")


def _add_debug(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    debug = sub.add_parser("debug", parents=[common], help="look inside what roostd stores",
                           description="Read-only views of roostd's stored state, for "
                                       "diagnosing a problem; they change nothing.")
    what = debug.add_subparsers(dest="debug_command", metavar="WHAT", required=True)
    checkpoint = what.add_parser(
        "checkpoint", parents=[common], help="show a stored checkpoint (like CRIU's crit)",
        description="Show a checkpoint as the daemon stores it: its manifest, its page map "
                    "(pages, zero pages, the versions it takes pages from), the header of every "
                    "frame it needs (version, index, pages, bytes, checksums) and its host state. "
                    "With --json, all of it as one JSON object.")
    checkpoint.add_argument("id", metavar="ID", help="execution id or name")
    checkpoint.add_argument("number", metavar="NUMBER", nargs="?", type=_arg(_checkpoint_number),
                            default=0, help="checkpoint number (default: the newest restorable one)")


def _checkpoint_number(text: str) -> int:
    """A checkpoint number: 1 or more, at most u32."""
    if not text.isdigit() or not 1 <= int(text) < 1 << 32:
        raise LocalError(f"bad checkpoint number {text!r}: expected 1, 2, ...")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    """The whole `roost` command line."""
    common = _common_options()
    parser = argparse.ArgumentParser(
        prog="roost", description="Run WebAssembly programs as durable executions."
    )
    parser.add_argument(
        "--addr", default=None, help="roostd address: HOST:PORT or unix:PATH (default: $ROOST_ADDR, "
        "else the local roostd's socket, unix:/run/roost/roostd.sock for root)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.add_argument("--tls-ca", help="mutual TLS: CA certificate (default $ROOST_TLS_CA)")
    parser.add_argument("--tls-cert", help="mutual TLS: client certificate (default $ROOST_TLS_CERT)")
    parser.add_argument("--tls-key", help="mutual TLS: client key (default $ROOST_TLS_KEY)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_run(sub, common)
    _add_execution_commands(sub, common)
    _add_later_commands(sub, common)
    _add_debug(sub, common)
    return parser


def split_guest_args(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """For `run`, splits off everything after the first `--`: the guest's arguments.

    Done before argparse so guest arguments that look like options ("-v", "--help", "--")
    reach the guest untouched. Other commands keep `--` with its usual meaning.
    """
    argv = list(argv)
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        i += 2 if argv[i] in ("--addr", "--tls-ca", "--tls-cert", "--tls-key") else 1
    if i >= len(argv) or argv[i] != "run" or "--" not in argv[i + 1 :]:
        return argv, []
    cut = argv.index("--", i + 1)
    return argv[:cut], argv[cut + 1 :]


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """Parses a `roost` command line (exits 2 with usage on bad arguments)."""
    head, guest_args = split_guest_args(argv)
    ns = build_parser().parse_args(head)
    if ns.command == "run":
        ns.args = [*ns.args, *guest_args]
    if ns.command == "modules":
        ns.modules_command = getattr(ns, "modules_command", None)
    ns.addr = ns.addr or default_addr()
    return ns


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `roost`; returns the process exit code."""
    try:
        ns = parse_args(sys.argv[1:] if argv is None else argv)
    except SystemExit as exit:
        return int(exit.code or 0) if not isinstance(exit.code, str) else commands.EXIT_USAGE
    if ns.command == "sdk-path":                # local: no daemon needed
        return commands.cmd_sdk_path(ns)
    try:
        with Client(ns.addr, tls_of(ns)) as client:
            return commands.COMMANDS[ns.command](client, ns)
    except KeyboardInterrupt:
        return commands.EXIT_INTERRUPTED
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except RoostClientError as err:
        commands.say(describe(err, ns.addr))
    except LocalError as err:
        commands.say(str(err))
    except OSError as err:
        commands.say(f"{err.filename or 'local file'}: {err.strerror or err}")
    return commands.EXIT_ERROR


def tls_of(ns: argparse.Namespace) -> TLS | None:
    """--tls-* flags (all three), else the environment's ($ROOST_TLS_*), else plaintext."""
    ca, cert, key = (getattr(ns, f"tls_{k}", None) for k in ("ca", "cert", "key"))
    if ca and cert and key:
        return TLS(ca, cert, key)
    if ca or cert or key:
        raise LocalError("--tls-ca, --tls-cert and --tls-key go together")
    return None


def describe(err: RoostClientError, addr: str) -> str:
    """The one line a failed daemon call becomes. UNAVAILABLE that roostd itself sent (a peer
    it cannot reach: `err.error` is set) is its message, not "cannot reach roostd"."""
    if err.code_name == "UNAVAILABLE" and not err.error:
        return f"cannot reach roostd at {addr}: {err.message}"
    if err.code_name == "DEADLINE_EXCEEDED":
        return f"timed out: {err.message}"
    return err.message


def _silence_stdout() -> None:
    """After a closed pipe, point stdout at /dev/null so the exit-time flush stays quiet."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


if __name__ == "__main__":
    sys.exit(main())
