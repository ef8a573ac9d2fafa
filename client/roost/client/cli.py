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

from roost.client import commands, conventions, logtimes
from roost.client.api import TLS, Client, default_addr, with_default_port
from roost.client.display import parse_memory_limit
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


ADDR_HELP = ("roostd address: HOST[:PORT] (port 7070 when none is given; [IPv6][:PORT]) or "
             "unix:PATH (default: $ROOST_ADDR, else the local roostd's socket, "
             "unix:/run/roost/roostd.sock for root)")
JSON_HELP = "print JSON instead of text (output and records as JSON lines where they stream)"
TLS_HELP = {"ca": "mutual TLS: CA certificate (default $ROOST_TLS_CA)",
            "cert": "mutual TLS: client certificate (default $ROOST_TLS_CERT)",
            "key": "mutual TLS: client key (default $ROOST_TLS_KEY)"}


def _global_options(parser: argparse.ArgumentParser, default: Any) -> None:
    """--addr, --json and --tls-*: on the top parser (default None/False) and on every
    subcommand (default SUPPRESS, so a flag given before the subcommand is not overwritten)."""
    parser.add_argument("--addr", default=default, help=ADDR_HELP)
    parser.add_argument("--json", action="store_true",
                        default=default if default is argparse.SUPPRESS else False, help=JSON_HELP)
    for key, text in TLS_HELP.items():
        parser.add_argument(f"--tls-{key}", default=default, metavar="PEM", help=text)


def _common_options() -> argparse.ArgumentParser:
    """The global flags, accepted before or after the subcommand."""
    common = argparse.ArgumentParser(add_help=False)
    _global_options(common, argparse.SUPPRESS)
    return common


def _add_run(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    run = sub.add_parser("run", parents=[common], help="run a module as a durable execution")
    run.add_argument("--detach", "-d", action="store_true", help="print the id and return")
    run.add_argument("--name", help="a name for the execution")
    run.add_argument("--argv0", help="the guest's argv[0] (default: module file name)")
    run.add_argument("--env", "-e", action="append", default=[], type=_arg(parse_env), metavar="K=V",
                     help="set an environment variable of the guest (repeatable; the guest sees "
                          "no other: the host's environment is not passed)")
    run.add_argument("--stdin", metavar="FILE",
                     help="file whose bytes are the guest's stdin ('-': roost's own stdin, as -i)")
    run.add_argument("-i", "--interactive", action="store_true",
                     help="forward roost's stdin to the guest: read to its end before the start "
                          "(a durable execution's stdin is fixed when it starts)")
    run.add_argument(
        "--mount", action="append", default=[], type=_arg(parse_mount_spec), metavar="HOSTDIR:GUESTDIR",
        help="copy HOSTDIR into the guest's own filesystem, preopened as GUESTDIR (/app, /, .); "
             "the host's copy is never written (read results with roost cp); repeatable"
    )
    mode = run.add_mutually_exclusive_group()
    mode.add_argument("--preempt", dest="cooperative", action="store_false",
                      help="checkpoints can stop the guest anywhere, even in a pure compute "
                           "loop (safepoint polls in loops; the default)")
    mode.add_argument("--cooperative", dest="cooperative", action="store_true",
                      help="no loop polls (a little faster): checkpoints, pauses and migrations "
                           "happen only at the guest's host calls")
    run.set_defaults(cooperative=False)  # store_false alone would default to True
    run.add_argument("--checkpoint-every", type=float, metavar="SECONDS",
                     help="checkpoint this often, bounding what a recovery re-executes "
                          "(default: the daemon's checkpoints.every_seconds, 1 s)")
    run.add_argument("--memory-limit", type=_arg(parse_memory_limit), metavar="SIZE",
                     help="cap the guest's linear memory: 256M, 1G (64K to 4G; default: the "
                          "daemon's limits.memory_bytes)")
    run.add_argument("--allow-http", action="append", default=[], metavar="PREFIX",
                     help="let the guest send HTTP requests under PREFIX "
                          "(scheme://host[:port]/path/; within the daemon's [[http.allow]]); "
                          "repeatable")
    run.add_argument("--place", metavar="auto|NODE",
                     help="run on a member of the cluster: auto (the least loaded healthy one), "
                          "a node id or HOST:PORT (default: the daemon asked)")
    run.add_argument("module", metavar="MODULE.wasm", help="the WebAssembly (WASI) module to run")
    run.add_argument("args", nargs="*", metavar="ARGS", help="guest arguments, after --")


def _add_one_id(sub: argparse._SubParsersAction, common: argparse.ArgumentParser, name: str, text: str):
    parser = sub.add_parser(name, parents=[common], help=text)
    parser.add_argument("id", metavar="ID", help="execution id (or a unique prefix) or name")
    return parser


LOGS_EXAMPLES = """examples:
  roost logs --tail 20 -t web     the last 20 lines, each with the time it was made durable
  roost logs --since 10m -f web   the last ten minutes' output, then follow it"""


def _add_logs_selection(logs: argparse.ArgumentParser) -> None:
    """`roost logs --tail N --since T --timestamps`, as `docker logs` has them."""
    logs.add_argument("-n", "--tail", default=None, type=_arg(logtimes.tail_lines), metavar="N",
                      help="only the last N lines (of the streams shown; 'all', the default: "
                           "every line; 0: none, with -f only new output)")
    logs.add_argument("--since", default=None, type=_arg(logtimes.parse_since), metavar="T",
                      help=logtimes.SINCE_HELP)
    logs.add_argument("-t", "--timestamps", action="store_true",
                      help="start every line with the time roostd made it durable (RFC 3339, "
                           "UTC, nanoseconds; 0001-01-01T00:00:00.000000000Z when not stored)")
    logs.epilog = LOGS_EXAMPLES
    logs.formatter_class = argparse.RawDescriptionHelpFormatter


def _add_execution_commands(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    sub.add_parser("nodes", parents=[common], help="list the cluster's members (* : this one)")
    ps = sub.add_parser("ps", parents=[common], help="list executions")
    ps.add_argument("-a", "--all", action="store_true", help="include ended executions")
    ps.add_argument("--all-nodes", action="store_true",
                    help="every member's executions, each where it runs (a NODE column)")
    ps.add_argument("-q", "--quiet", action="store_true",
                    help="only the ids, one a line (with --json: a JSON list of them)")
    _add_one_id(sub, common, "inspect", "show one execution")
    logs = _add_one_id(sub, common, "logs", "replay an execution's output")
    logs.add_argument("-f", "--follow", action="store_true",
                      help="keep streaming new output until the execution ends (across restarts "
                           "and migrations)")
    which = logs.add_mutually_exclusive_group()
    which.add_argument("--stdout", action="store_true", help="only stdout")
    which.add_argument("--stderr", action="store_true", help="only stderr")
    _add_logs_selection(logs)
    _add_one_id(sub, common, "wait", "wait for an execution to end; exit with its code")
    _add_one_id(sub, common, "kill", "kill an execution")
    cp = sub.add_parser("cp", parents=[common], help="copy a file or tree out of an execution")
    cp.add_argument("source", type=_arg(commands.split_copy_source), metavar="ID:GUESTPATH",
                    help="the execution and the path in its filesystem")
    cp.add_argument("dest", metavar="LOCALPATH",
                    help="where to write it (into it if it is a directory); '-': to stdout, a "
                         "file as its bytes, a tree as a tar stream (a file named - is ./-)")
    cp.add_argument("--unsafe-links", action="store_true",
                    help="also make symlinks that point outside the copied tree (absolute or "
                         "climbing out with '..'); by default they are skipped with a warning")


def _add_later_commands(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    modules = sub.add_parser("modules", parents=[common], help="list uploaded modules")
    prepare_sub = modules.add_subparsers(dest="modules_command", metavar="[prepare]")
    prepare = prepare_sub.add_parser("prepare", parents=[common],
                                     help="upload a module and prepare it ahead of its first run")
    prepare.add_argument("module", metavar="MODULE.wasm", help="the WebAssembly module to upload")
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


def _add_lifecycle(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """rm, prune, `modules rm` and `run --rm`: what removes executions and modules (their
    examples: `conventions.EXAMPLES`)."""
    rm = sub.add_parser("rm", parents=[common], help="remove ended executions and all they stored")
    rm.add_argument("-f", "--force", action="store_true",
                    help="kill an execution that has not ended, then remove it")
    rm.add_argument("ids", nargs="+", metavar="ID", help="execution id, name or unique id prefix")
    prune = sub.add_parser("prune", parents=[common], help="remove ended executions by age and state")
    prune.add_argument("--older-than", "--until", type=_arg(commands.parse_age), metavar="AGE",
                       help="only those that ended at least AGE ago (90s, 30m, 24h, 7d; "
                            "default: every ended one)")
    prune.add_argument("--state", action="append", default=[], type=_arg(commands.parse_states),
                       metavar="STATES", help="only these ended states, comma-separated: "
                       "exited, failed, killed (default: all three); repeatable")
    prune.add_argument("--dry-run", action="store_true",
                       help="remove nothing: list what would be removed and about how much")
    run = sub.choices["run"]
    run.add_argument("--rm", action="store_true",
                     help="remove the execution once it ended and its output was shown "
                          "(not with --detach)")
    modules_sub = next(a for a in sub.choices["modules"]._actions
                       if isinstance(a, argparse._SubParsersAction))
    modules_sub.metavar = "[prepare|rm]"
    mrm = modules_sub.add_parser("rm", parents=[common], help="remove modules no execution still uses")
    mrm.add_argument("-f", "--force", action="store_true",
                     help="remove a module even if ended executions used it (never one that "
                          "an execution still running, paused or sleeping needs)")
    mrm.add_argument("sha256s", nargs="+", metavar="SHA256", help="module sha256 or unique prefix")


def _checkpoint_number(text: str) -> int:
    """A checkpoint number: 1 or more, at most u32."""
    if not text.isdigit() or not 1 <= int(text) < 1 << 32:
        raise LocalError(f"bad checkpoint number {text!r}: expected 1, 2, ...")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    """The whole `roost` command line."""
    common = _common_options()
    parser = argparse.ArgumentParser(
        prog="roost", description="Run WebAssembly programs as durable executions.",
        epilog=conventions.EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"roost {conventions.client_version()}",
                        help="print the client's version and exit (`roost version`: the daemon's too)")
    _global_options(parser, None)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_run(sub, common)
    _add_execution_commands(sub, common)
    _add_later_commands(sub, common)
    _add_debug(sub, common)
    _add_lifecycle(sub, common)
    conventions.add_commands(sub, common)
    conventions.finish(parser)           # last: examples for every command, whoever added it
    return parser


def split_guest_args(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """For `run`, splits off everything after the first `--`: the guest's arguments.

    Done before argparse so guest arguments that look like options ("-v", "--help", "--")
    reach the guest untouched. Other commands keep `--` with its usual meaning.
    """
    argv = list(argv)
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        i += 2 if argv[i] in conventions.VALUE_FLAGS else 1
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
    ns.addr = with_default_port(ns.addr or default_addr())
    return ns


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `roost`; returns the process exit code."""
    try:
        ns = parse_args(sys.argv[1:] if argv is None else argv)
    except SystemExit as exit:
        return int(exit.code or 0) if not isinstance(exit.code, str) else commands.EXIT_USAGE
    tls: TLS | None = None
    try:
        local = commands.LOCAL_COMMANDS.get(ns.command)
        if local is not None:                 # no daemon needed
            return local(ns)
        with Client(ns.addr, tls_of(ns)) as client:
            tls = client.tls
            return commands.COMMANDS[ns.command](client, ns)
    except KeyboardInterrupt:
        return commands.EXIT_INTERRUPTED
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except RoostClientError as err:
        commands.say(conventions.tls_hint(err, ns.addr, tls) or describe(err, ns.addr))
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
