"""The `roost` subcommands: each takes the parsed arguments and returns an exit code.

Exit codes (`conventions.EPILOG`, shown by `roost --help`): the guest's own code for `run` and
`wait`; 134 when the execution failed (trap, limit, crash); 137 when it was killed; 130 after
Ctrl-C; 125 for roost's own errors (unreachable daemon, unknown id, rejected module,
unreadable file); 2 for usage errors.
"""
from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path

from roost.client import cluster, conventions, cpstdout, debug, display, logtimes, sdk, times
from roost.client.api import Client
from roost.client.attach import Follow, Reconnect, follow_logs, moved, write_chunk
from roost.client.copyout import write_chunks
from roost.client.errors import LocalError, RoostClientError
from roost.client.mounts import read_mount
from roost.v1 import control_pb2 as pb

EXIT_ERROR = conventions.EXIT_ERROR
EXIT_USAGE = conventions.EXIT_USAGE
EXIT_FAILED = conventions.EXIT_FAILED
EXIT_INTERRUPTED = conventions.EXIT_INTERRUPTED
EXIT_KILLED = conventions.EXIT_KILLED
EXIT_GUEST_256 = 1       # a guest code that is a nonzero multiple of 256: still a failure

Command = Callable[[Client, argparse.Namespace], int]


def say(message: str) -> None:
    """One line for the user on stderr, prefixed like every roost message."""
    sys.stderr.write(f"roost: {message}\n")
    sys.stderr.flush()


def exit_status(execution: pb.Execution) -> int:
    """The process exit code that stands for how an execution ended (reports failures)."""
    if execution.state == pb.EXITED:
        code = execution.exit_code & 0xFF
        return code if code or not execution.exit_code else EXIT_GUEST_256
    if execution.state == pb.FAILED:
        say(f"execution {execution.id} failed: {execution.error or 'unknown error'}")
        return EXIT_FAILED
    if execution.state == pb.KILLED:
        return EXIT_KILLED
    say(f"execution {execution.id} has not ended ({display.state_name(execution.state)})")
    return EXIT_ERROR


# run


class UploadProgress:
    """A one-line progress meter on stderr; silent unless stderr is a terminal."""

    def __init__(self, name: str, enabled: bool) -> None:
        self.name = name
        self.enabled = enabled
        self._shown = False

    def __call__(self, sent: int, total: int) -> None:
        if not self.enabled:
            return
        percent = 100 * sent // total if total else 100
        amount = f"{display.human_bytes(sent)} / {display.human_bytes(total)}"
        sys.stderr.write(f"\r\x1b[Kuploading {self.name}: {amount} ({percent}%)")
        if sent >= total:       # the daemon checks it (it prepares it in the background)
            sys.stderr.write(f"\r\x1b[Kchecking {self.name}...")
        sys.stderr.flush()
        self._shown = True

    def finish(self, module: pb.Module) -> None:
        """Ends the meter's line and says whether the bytes were already there."""
        if not self.enabled:
            return
        if module.deduplicated:
            self._clear()
            sys.stderr.write(f"module {self.name} already uploaded ({module.sha256[:12]})\n")
        elif self._shown:
            self._clear()
            sys.stderr.write(f"uploaded {self.name} ({module.sha256[:12]}); it is prepared for "
                             "checkpoints in the background\n")
        sys.stderr.flush()

    def _clear(self) -> None:
        if self._shown:
            sys.stderr.write("\r\x1b[K")


def upload(client: Client, path: Path) -> pb.Module:
    """Uploads a module, calling a daemon's INVALID_ARGUMENT what it is: a rejected module."""
    if not path.is_file():
        raise LocalError(f"module {path}: no such file")
    progress = UploadProgress(path.name, sys.stderr.isatty())
    try:
        module = client.upload_module(path, progress)
    except RoostClientError as err:
        if err.code_name == "INVALID_ARGUMENT" and not err.message.startswith("module rejected"):
            raise RoostClientError(err.code_name, f"module rejected: {err.message}") from None
        raise
    progress.finish(module)
    return module


def default_argv0(module: str) -> str:
    """The module's file name without `.wasm`: what a native program's argv[0] would be."""
    return Path(module).name.removesuffix(".wasm")


def cmd_run(client: Client, ns: argparse.Namespace) -> int:
    """Uploads (if needed), starts, and unless --detach attaches until the guest ends; with
    --place, all of it at the member chosen (`auto`: the least loaded)."""
    if getattr(ns, "rm", False) and ns.detach:
        return refuse_rm_detached()
    stdin = conventions.guest_stdin(ns)
    mounts = [read_mount(spec) for spec in ns.mount]
    if ns.place:
        client, node = cluster.placed(client, ns.place)
        if node is not None and sys.stderr.isatty():
            say(f"placed on {node.node_id} ({node.address or client.addr})")
    module = upload(client, Path(ns.module))
    execution = client.start(
        module.sha256,
        name=ns.name or "",
        argv0=ns.argv0 or default_argv0(ns.module),
        args=ns.args,
        env=ns.env,
        stdin=stdin,
        mounts=mounts,
        cooperative=ns.cooperative,
        checkpoint_every_seconds=ns.checkpoint_every or 0.0,
        memory_limit_bytes=ns.memory_limit or 0,
        allow_http=ns.allow_http,
    )
    if ns.detach:
        print(display.to_json(execution) if ns.json else execution.id)
        return 0
    code = attach(client, execution.id, as_json=ns.json)
    if getattr(ns, "rm", False):
        remove_after_run(client, execution.id, code)
    return code


def attach(client: Client, id: str, as_json: bool = False) -> int:
    """Streams the output until the execution ends, then exits as the guest did. With
    `as_json`, the output as JSON lines and last {"execution": ...}, the execution as ended."""
    notify = say if sys.stderr.isatty() else None
    reconnect = Reconnect(notify=notify)
    follow = Follow(client)
    write = conventions.write_chunk_json if as_json else write_chunk
    try:
        follow_logs(client, id, reconnect=reconnect, follow=follow, write=write)
        execution = wait_until_ended(client, id, reconnect, follow)
    except KeyboardInterrupt:
        say(f"detached; execution {id} keeps running (roost logs -f {id})")
        return EXIT_INTERRUPTED
    if as_json:
        conventions.print_json_line({"execution": display.message_dict(execution)})
    return exit_status(execution)


def owner(client: Client, id: str) -> Client:
    """The client of the daemon that runs the execution now (any daemon of the cluster that
    knows it says where it went)."""
    follow = Follow(client)
    for _ in range(8):                    # a chain of migrations, followed to its end
        if not follow.track(follow.client.get(id)):
            break
    return follow.client


def wait_until_ended(client: Client, id: str, reconnect: Reconnect,
                     follow: Follow | None = None) -> pb.Execution:
    """WaitExecution, again after a daemon restart or an answer sent while shutting down, and
    at the execution's new daemon after a migration."""
    follow = follow or Follow(client)
    while True:
        execution = reconnect.call(lambda: follow.wait(id))
        if execution.state in display.ENDED_STATES and not moved(execution):
            return execution
        if not follow.track(execution) or follow.bouncing:
            reconnect.idle()


# listings


def _age(seconds_since_epoch: float, now: float) -> str:
    return display.human_duration(now - seconds_since_epoch) if seconds_since_epoch else "-"


def execution_row(e: pb.Execution, now: float) -> list[str]:
    """One `ps` row: ID, NAME, STATE, EXIT, MODULE, AGE, RUNTIME."""
    runtime = display.runtime_seconds(e, now)
    elsewhere = bool(moved(e))
    return [
        e.id,
        e.name or "-",
        f"on {e.owner}" if elsewhere else display.state_name(e.state),
        str(e.exit_code) if e.state == pb.EXITED and not elsewhere else "-",
        e.module_name or e.module_sha256[:12],
        _age(times.unix_seconds(e.create_time), now),
        display.human_duration(runtime) if runtime is not None else "-",
    ]


def cmd_ps(client: Client, ns: argparse.Namespace) -> int:
    """Lists the daemon's running executions; with -a, ended ones too; with --all-nodes, every
    member's, each once, where it runs (NODE)."""
    if ns.all_nodes:
        return _ps_all_nodes(client, ns)
    executions = client.list(all=ns.all)
    if getattr(ns, "quiet", False):
        return _ps_ids(executions, ns.json)
    if ns.json:
        print(display.to_json(executions))
        return 0
    now = time.time()
    headers = ["ID", "NAME", "STATE", "EXIT", "MODULE", "AGE", "RUNTIME"]
    print(display.table(headers, (execution_row(e, now) for e in executions)))
    return 0


def _ps_all_nodes(client: Client, ns: argparse.Namespace) -> int:
    """`ps --all-nodes`: the ps table with a NODE column (the owner); --json: the executions,
    `owner` naming the node."""
    executions = cluster.list_everywhere(client, ns.all, lambda text: say(f"warning: {text}"))
    if getattr(ns, "quiet", False):
        return _ps_ids(executions, ns.json)
    if ns.json:
        print(display.to_json(executions))
        return 0
    now = time.time()
    headers = ["ID", "NAME", "NODE", "STATE", "EXIT", "MODULE", "AGE", "RUNTIME"]
    rows = ([*row[:2], e.owner, *row[2:]] for e in executions
            for row in [execution_row(e, now)])
    print(display.table(headers, rows))
    return 0


def _ps_ids(executions: list[pb.Execution], as_json: bool) -> int:
    """`ps -q`: the ids only, one a line (a JSON list with --json), for scripts and completion."""
    ids = [e.id for e in executions]
    if as_json:
        print(json.dumps(ids))
    elif ids:
        print("\n".join(ids))
    return 0


def cmd_nodes(client: Client, ns: argparse.Namespace) -> int:
    """Lists the cluster's members: node id, address, health, executions, load."""
    nodes = client.nodes()
    if ns.json:
        print(display.to_json(nodes))
        return 0
    headers = ["NODE", "ADDRESS", "HEALTH", "EXECUTIONS", "LOAD"]
    rows = ([f"{n.node_id}{' *' if n.self else ''}", n.address or "-",
             "up" if n.healthy else "down", str(n.executions), f"{n.load:.2f}"] for n in nodes)
    print(display.table(headers, rows))
    return 0


def inspect_lines(e: pb.Execution, now: float) -> list[tuple[str, str]]:
    """The `inspect` listing as (key, value) pairs, in reading order."""
    runtime = display.runtime_seconds(e, now)
    pairs = [
        ("id", e.id),
        ("name", e.name or "-"),
        ("state", display.state_name(e.state)),
        ("exit_code", str(e.exit_code) if e.state == pb.EXITED else "-"),
        ("error", e.error or "-"),
        ("module", f"{e.module_name or '-'} ({e.module_sha256})"),
        ("argv", shlex.join(e.argv)),
        *[("env", f"{v.key}={v.value}") for v in e.env],
        ("mounts", ", ".join(e.mounts) or "-"),
        ("created", _when(times.unix_seconds(e.create_time), now)),
        ("started", _when(times.unix_seconds(e.start_time), now)),
        ("finished", _when(times.unix_seconds(e.finish_time), now)),
        ("runtime", display.human_duration(runtime) if runtime is not None else "-"),
        ("mode", "cooperative" if e.cooperative else "preempt"),
        ("checkpoint_every", f"{times.seconds_of(e.checkpoint_interval):g}s"
         if e.HasField("checkpoint_interval") else "-"),
        ("memory", f"{display.human_bytes(e.memory_bytes)} / {_limit(e.memory_limit_bytes)}"),
        ("stdout", display.human_bytes(e.stdout_bytes)),
        ("stderr", display.human_bytes(e.stderr_bytes)),
        ("host_calls", str(e.host_calls)),
        ("journal_records", str(e.journal_records)),
        ("checkpoints", str(e.checkpoints)),
        ("restores", str(e.restores)),
        ("restore_time", f"{times.seconds_of(e.restore_duration) * 1000:.1f}ms"
         if e.HasField("restore_duration") else "-"),
        ("dirty_tracker", e.dirty_tracker or "-"),
        # Only a RUNNING execution has a worker: a pid from an older daemon is not shown.
        ("worker_pid", str(e.worker_pid) if e.worker_pid and e.state == pb.RUNNING else "-"),
        ("node", e.node_id or "-"),
        ("owner", f"{e.owner} ({e.owner_address})" if e.owner_address else e.owner or "-"),
        ("epoch", str(e.epoch) if e.epoch else "-"),
        ("replicas", ", ".join(e.replicas) or "-"),
        *[("note", note) for note in e.notes],
        *_http_lines(e),
    ]
    return pairs


def _http_lines(e: pb.Execution) -> list[tuple[str, str]]:
    """Outbound HTTP: where it may go and what its requests did (only if it may make any)."""
    if not e.allow_http:
        return []
    h = e.http
    return [("allow_http", ", ".join(e.allow_http)),
            ("http_requests", f"{h.sent} sent, {h.replayed} replayed, {h.resent} sent again, "
                              f"{len(h.interrupted)} interrupted, {h.refused} refused, "
                              f"{h.failed} failed"),
            ("http_in_flight", h.in_flight or "-"),
            *[("http_interrupted", text) for text in h.interrupted]]


def cmd_sdk_path(ns: argparse.Namespace) -> int:
    """The folder of the guest SDK installed with roost (c/roost.h, python/, js/)."""
    path = sdk.path()
    if path is None:
        say("roost's guest SDK is not installed with this roost (no sdk folder found)")
        return EXIT_ERROR
    print(json.dumps({"path": str(path)}) if ns.json else path)
    return 0


def _when(timestamp: float, now: float) -> str:
    if not timestamp:
        return "-"
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))
    return f"{stamp} ({display.human_duration(now - timestamp)} ago)"


def _limit(limit_bytes: int) -> str:
    return display.human_bytes(limit_bytes) if limit_bytes else "default"


def cmd_inspect(client: Client, ns: argparse.Namespace) -> int:
    """Shows everything the daemon knows about one execution."""
    execution = owner(client, ns.id).get(ns.id)
    if ns.json:
        print(display.to_json(execution))
        return 0
    pairs = inspect_lines(execution, time.time())
    width = max(len(k) for k, _ in pairs) + 1
    print("\n".join(f"{k + ':':<{width}} {v}" for k, v in pairs))
    return 0


def cmd_modules(client: Client, ns: argparse.Namespace) -> int:
    """Lists the modules the daemon holds; `modules prepare` uploads and prepares one ahead
    of its first run (both modes: preemptive and cooperative)."""
    if ns.modules_command == "prepare":
        return _prepare(client, ns)
    if ns.modules_command == "rm":
        return cmd_modules_rm(client, ns)
    modules = client.modules()
    if ns.json:
        print(display.to_json(modules))
        return 0
    now = time.time()
    rows = (
        [m.sha256[:12], m.name, display.human_bytes(m.size_bytes), _age(times.unix_seconds(m.upload_time), now),
         str(len(m.imports))]
        for m in modules
    )
    print(display.table(["SHA256", "NAME", "SIZE", "UPLOADED", "IMPORTS"], rows))
    return 0


def _prepare(client: Client, ns: argparse.Namespace) -> int:
    path = Path(ns.module)
    if not path.is_file():
        raise LocalError(f"{path}: no such file")
    progress = UploadProgress(path.name, sys.stderr.isatty())
    module = client.upload_module(path, progress=progress)
    progress.finish(module)
    for cooperative in (False, True):
        if sys.stderr.isatty():
            say(f"preparing {path.name} ({'cooperative' if cooperative else 'preemptive'} mode)")
        client.prepare_module(module.sha256, cooperative)
    print(display.to_json(module) if ns.json else module.sha256)
    return 0


# one execution


def log_stream(ns: argparse.Namespace) -> pb.LogStream | None:
    """The stream `logs` asked for: STDOUT, STDERR, or None for both."""
    if ns.stdout:
        return pb.STDOUT
    return pb.STDERR if ns.stderr else None


def log_writer(ns: argparse.Namespace) -> Callable[[pb.LogChunk], None]:
    """How `logs` writes a chunk: byte for byte, or with -t each line stamped with its time."""
    if ns.json:
        return conventions.write_chunk_json      # JSON lines carry the time themselves
    return logtimes.Stamped().write if getattr(ns, "timestamps", False) else write_chunk


def cmd_logs(client: Client, ns: argparse.Namespace) -> int:
    """Replays the durable output byte for byte (from --tail/--since on); with -f keeps
    following until the end."""
    stream, write = log_stream(ns), log_writer(ns)
    tail, since = getattr(ns, "tail", None), getattr(ns, "since", None)
    if ns.follow:
        follow_logs(client, ns.id, stream=stream, write=write, tail=tail, since=since,
                    reconnect=Reconnect(reached=False))
        return 0
    for chunk in owner(client, ns.id).logs(ns.id, stream=stream, tail=tail, since=since):
        write(chunk)
    return 0


def cmd_wait(client: Client, ns: argparse.Namespace) -> int:
    """Blocks until the execution ends and exits with its code."""
    execution = wait_until_ended(client, ns.id, Reconnect(reached=False))
    if ns.json:
        print(display.to_json(execution))
    return exit_status(execution)


def cmd_kill(client: Client, ns: argparse.Namespace) -> int:
    """Kills an execution and prints its id (or the execution with --json)."""
    execution = owner(client, ns.id).kill(ns.id)
    print(display.to_json(execution) if ns.json else execution.id)
    return 0


def split_copy_source(source: str) -> tuple[str, str]:
    """ID:GUESTPATH -> (ID, GUESTPATH), split at the first ':'."""
    id, sep, guest_path = source.partition(":")
    if not sep or not id or not guest_path:
        raise LocalError(f"bad source {source!r}: expected ID:GUESTPATH")
    return id, guest_path


def cmd_cp(client: Client, ns: argparse.Namespace) -> int:
    """Copies a file or tree out of an execution's filesystem (safely: see copyout)."""
    id, guest_path = ns.source
    chunks = owner(client, id).copy_out(id, guest_path)
    if ns.dest == "-":                          # stdout: a file's bytes, a tree as tar
        if ns.json:
            raise LocalError("cp to - writes the data itself to stdout: --json cannot go with it")
        cpstdout.write_stdout(chunks, guest_path, sys.stdout.buffer)
        return 0
    tally = conventions.CopyTally(chunks)
    root = write_chunks(tally, guest_path, Path(ns.dest), unsafe_links=ns.unsafe_links,
                        warn=lambda message: say(f"warning: {message}"))
    if ns.json:
        print(json.dumps({"id": id, "path": guest_path, "dest": str(root), **tally.counts},
                         indent=2))
    return 0


def cmd_checkpoint(client: Client, ns: argparse.Namespace) -> int:
    """Checkpoints an execution now and reports how long the guest stood still."""
    r = owner(client, ns.id).checkpoint(ns.id)
    if ns.json:
        print(display.to_json(r))
        return 0
    ms = {k: times.seconds_of(getattr(r, k)) * 1000
          for k in ("pause_duration", "time_to_safepoint", "total_duration")}
    print(f"checkpoint {r.number} of {ns.id}: paused {ms['pause_duration']:.1f} ms "
          f"(safepoint reached in {ms['time_to_safepoint']:.2f} ms), "
          f"{r.dirty_pages} dirty pages ({display.human_bytes(r.dirty_bytes)}), "
          f"{display.human_bytes(r.stored_bytes)} stored for {display.human_bytes(r.memory_bytes)} "
          f"of memory, {ms['total_duration']:.1f} ms in all")
    return 0


def cmd_pause(client: Client, ns: argparse.Namespace) -> int:
    execution = owner(client, ns.id).pause(ns.id)
    print(display.to_json(execution) if ns.json else execution.id)
    return 0


def cmd_resume(client: Client, ns: argparse.Namespace) -> int:
    execution = owner(client, ns.id).resume(ns.id)
    print(display.to_json(execution) if ns.json else execution.id)
    return 0


def cmd_migrate(client: Client, ns: argparse.Namespace) -> int:
    """Moves an execution to another roostd; progress on a terminal, then the report."""
    show = sys.stderr.isatty() and not ns.json
    report = None
    target = cluster.address_of(client, ns.to)
    for p in owner(client, ns.id).migrate(ns.id, target, cold=ns.cold,
                            downtime_budget_seconds=(ns.downtime_ms or 0) / 1000.0):
        if p.HasField("report"):
            report = p.report
        elif show:
            sys.stderr.write(f"\r{p.phase}: round {p.round}, {display.human_bytes(p.bytes_sent)} sent"
                             f", {times.seconds_of(p.elapsed):.1f}s\033[K")
            sys.stderr.flush()
    if show:
        sys.stderr.write("\r\033[K")
    if report is None:
        raise LocalError(f"migration of {ns.id}: the daemon sent no report")
    if ns.json:
        print(display.to_json(report))
        return 0
    print(f"migrated {report.id} from {report.source} to {report.target} "
          f"({'cold' if report.cold else 'live'}, epoch {report.epoch})")
    ms = {k: times.seconds_of(getattr(report, k)) * 1000
          for k in ("total_duration", "downtime", "stop_duration", "final_push_duration",
                    "handover_duration", "resume_duration")}
    print(f"rounds: {report.rounds}  sent: {display.human_bytes(report.bytes_sent)} for "
          f"{display.human_bytes(report.memory_bytes)} of memory  total: {ms['total_duration'] / 1000:.2f}s"
          f"  downtime: {ms['downtime']:.1f}ms"
          + (f"  throttled to {100 - report.throttle * 100:.0f}%" if report.throttle else ""))
    print(f"downtime: stop {ms['stop_duration']:.1f}ms, final pages "
          f"{display.human_bytes(report.final_bytes)} in {ms['final_push_duration']:.1f}ms, "
          f"handover {ms['handover_duration']:.1f}ms, resume {ms['resume_duration']:.1f}ms")
    return 0


def cmd_recover(client: Client, ns: argparse.Namespace) -> int:
    """Promotes the replica on NODE: it runs the execution at the next epoch (the old owner,
    if it ever comes back, drops its copy)."""
    with client.at(cluster.address_of(client, ns.on)) as target:
        execution = target.recover(ns.id)
    if ns.json:
        print(display.to_json(execution))
        return 0
    print(f"{execution.id} runs on {execution.owner} ({execution.owner_address}) at epoch "
          f"{execution.epoch}")
    return 0


def cmd_drain(client: Client, ns: argparse.Namespace) -> int:
    """Moves every running execution of a node to the other members (least loaded first);
    prints what went where; exit 1 if any could not move."""
    progress = say if sys.stderr.isatty() and not ns.json else None
    report = cluster.drain(client, ns.node, progress)
    if ns.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print("\n".join(report.lines()))
    return EXIT_ERROR if report.failed else 0


# lifecycle: rm, prune, modules rm, run --rm


def refuse_rm_detached() -> int:
    """`run --rm -d`: refused, as docker once did. roost removes a --rm execution from the
    client once its output is streamed: detached, nobody is there to do it (`roost rm` later,
    or the daemon's retention of ended executions, does)."""
    say("--rm and --detach do not go together: remove a detached execution with roost rm "
        "once it ended (or let [executions] retain_ended_seconds collect it)")
    return EXIT_USAGE


def remove_after_run(client: Client, id: str, code: int) -> None:
    """`run --rm`: the execution has ended and its output was streamed: remove it. One left
    running (Ctrl-C detached from it) stays; a failed removal is said, the guest's code kept."""
    if code == EXIT_INTERRUPTED:
        say(f"execution {id} was not removed (it keeps running): roost rm -f {id}")
        return
    try:
        owner(client, id).remove(id)
    except RoostClientError as err:
        say(f"could not remove execution {id}: {err.message}")


def cmd_rm(client: Client, ns: argparse.Namespace) -> int:
    """Removes each execution (id, name or unique id prefix) and all it stored; prints each
    id removed. One that fails is said and the others still go; exit 1 if any failed."""
    removed, failed = [], False
    for ref in ns.ids:
        try:
            r = owner(client, ref).remove(ref, force=ns.force)
        except RoostClientError as err:
            say(err.message)
            failed = True
            continue
        removed.append({"id": r.id, "bytes_freed": r.bytes_freed})
        if not ns.json:
            print(r.id)
    if ns.json:
        print(json.dumps(removed, indent=2))
    return EXIT_ERROR if failed else 0


PRUNE_STATES = {"exited": pb.EXITED, "failed": pb.FAILED, "killed": pb.KILLED}
_AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_age(text: str) -> float:
    """--older-than: 90s, 30m, 24h, 7d, 2w, 1h30m, or plain seconds -> seconds."""
    parts = re.findall(r"(\d+(?:\.\d+)?)([smhdw])", text)
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise LocalError(f"bad duration {text!r}: expected e.g. 90s, 30m, 24h, 7d, 1h30m")
    return sum(float(n) * _AGE_UNITS[u] for n, u in parts)


def parse_states(text: str) -> list[pb.ExecutionState]:
    """--state exited,failed,killed -> ExecutionState values (ended states only)."""
    out = []
    for name in filter(None, (s.strip().lower() for s in text.split(","))):
        if name not in PRUNE_STATES:
            raise LocalError(f"bad state {name!r}: prune takes exited, failed, killed")
        out.append(PRUNE_STATES[name])
    return out


def cmd_prune(client: Client, ns: argparse.Namespace) -> int:
    """Removes the daemon's ended executions by age and state (--dry-run: lists them);
    prints the ids, then the space reclaimed in the store."""
    states = [s for group in ns.state for s in group]
    r = client.prune(ns.older_than or 0.0, states, ns.dry_run)
    if ns.json:
        print(json.dumps({"ids": list(r.ids), "bytes_freed": r.bytes_freed,
                          "dry_run": ns.dry_run}, indent=2))
        return 0
    for id in r.ids:
        print(id)
    size = display.human_bytes(r.bytes_freed)
    print(f"would remove {len(r.ids)} executions, about {size} (dry run: nothing removed)"
          if ns.dry_run else f"Total reclaimed space: {size}")
    return 0


def cmd_modules_rm(client: Client, ns: argparse.Namespace) -> int:
    """Removes modules (sha256 or unique prefix) no execution still uses, with their
    prepared artifacts; prints each sha256 removed; exit 1 if any could not go."""
    removed, failed = [], False
    for ref in ns.sha256s:
        try:
            r = client.remove_module(ref, force=ns.force)
        except RoostClientError as err:
            say(err.message)
            failed = True
            continue
        removed.append({"sha256": r.sha256, "bytes_freed": r.bytes_freed,
                        "cache_files": r.cache_files})
        if not ns.json:
            print(r.sha256)
    if ns.json:
        print(json.dumps(removed, indent=2))
    return EXIT_ERROR if failed else 0


COMMANDS: dict[str, Command] = {
    "run": cmd_run,
    "ps": cmd_ps,
    "nodes": cmd_nodes,
    "inspect": cmd_inspect,
    "logs": cmd_logs,
    "wait": cmd_wait,
    "kill": cmd_kill,
    "cp": cmd_cp,
    "modules": cmd_modules,
    "checkpoint": cmd_checkpoint,
    "pause": cmd_pause,
    "resume": cmd_resume,
    "migrate": cmd_migrate,
    "drain": cmd_drain,
    "recover": cmd_recover,
    "debug": debug.cmd_debug,
    "rm": cmd_rm,
    "prune": cmd_prune,
    "version": conventions.cmd_version,
}

# Commands that need no daemon (`cli.main` calls them without a Client).
LOCAL_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "sdk-path": cmd_sdk_path,
    "completion": conventions.cmd_completion,
}
