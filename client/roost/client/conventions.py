"""What `roost` shares with the CLIs operators already know (docker, podman, temporal): exit
codes, `--version` and `roost version`, an example on every command's help, shell completion,
`-i` and `-` for stdin, JSON records for streamed output, and one-line TLS-mismatch hints.

Kept apart from `commands` (the subcommands themselves) so that the conventions are in one
place and apply to every command, including ones added later: `finish` walks the whole parser.
"""
from __future__ import annotations

import argparse
import base64
import fcntl
import json
import os
import platform
import stat
import sys
import termios
from collections.abc import Iterable, Iterator
from typing import Any

from roost.client import display
from roost.client.api import TLS, Client, is_local_socket, speaks_tls
from roost.client.errors import LocalError, RoostClientError
from roost.v1 import control_pb2 as pb

# Exit codes. The guest's own code (0-255) is the rest of the range: what a script tests.
EXIT_USAGE = 2           # as argparse and POSIX tools: the command line itself is wrong
EXIT_ERROR = 125         # roost's own failure (docker's convention): nothing ran, or roost broke
EXIT_FAILED = 134        # the execution FAILED: trap, limit, OOM, crash (128+SIGABRT, as a
                         # native program that aborted)
EXIT_INTERRUPTED = 130   # Ctrl-C (128+SIGINT)
EXIT_KILLED = 137        # the execution was KILLED (128+SIGKILL, as docker's killed container)
EXIT_BROKEN_PIPE = 141   # stdout closed early (128+SIGPIPE)

EPILOG = f"""\
exit codes:
  0-255  run, wait: the guest's own exit code (mod 256; a nonzero multiple of 256 gives 1)
  {EXIT_USAGE}      usage error: a bad command, flag or flag value (nothing was sent)
  {EXIT_ERROR}    roost's own error: roostd unreachable or refusing (unknown id, bad request,
         conflict), an unreadable local file, a failed drain
  {EXIT_INTERRUPTED}    interrupted (Ctrl-C); an attached execution keeps running
  {EXIT_FAILED}    run, wait: the execution FAILED (trap, memory limit, out of memory, worker
         crash); the reason is on stderr
  {EXIT_KILLED}    run, wait: the execution was KILLED (roost kill)
  {EXIT_BROKEN_PIPE}    stdout was closed early (a broken pipe)

Global flags (--addr, --json, --tls-*) go before or after the command.
Run `roost COMMAND --help` for a command's flags and an example."""

# Flags that take a value wherever they appear (`cli.split_guest_args` skips their value).
VALUE_FLAGS = frozenset({"--addr", "--tls-ca", "--tls-cert", "--tls-key"})

# An example (or a few) for every command's --help, by command path. `finish` adds them; a
# test checks that every command of the parser has one, so a new command needs its line here.
EXAMPLES: dict[str, list[str]] = {
    "run": ["roost run app.wasm -- arg1 arg2",
            "roost run -d --name job --mount ./in:/data --env K=V --memory-limit 256M app.wasm",
            "echo hello | roost run -i app.wasm"],
    "ps": ["roost ps -a", "roost ps -aq | xargs -n1 roost inspect --json"],
    "nodes": ["roost nodes --json"],
    "inspect": ["roost inspect job"],
    "logs": ["roost logs -f job", "roost logs --json --stderr job"],
    "wait": ["roost wait job; echo $?"],
    "kill": ["roost kill job"],
    "cp": ["roost cp job:/data/out.txt ./out.txt", "roost cp job:/data ./dest",
           "roost cp job:/data/out.txt - | wc -c", "roost cp job:/data - | tar -t"],
    "modules": ["roost modules", "roost modules prepare app.wasm"],
    "modules prepare": ["roost modules prepare app.wasm"],
    "modules rm": ["roost modules rm 3f2a9c1e"],
    "checkpoint": ["roost checkpoint job"],
    "pause": ["roost pause job"],
    "resume": ["roost resume job"],
    "migrate": ["roost migrate job --to host2:7070", "roost migrate job --to n2 --cold"],
    "recover": ["roost recover job --on n2"],
    "sdk-path": ['cc -I"$(roost sdk-path)/c" ...'],
    "drain": ["roost drain n1"],
    "debug": ["roost debug checkpoint job"],
    "debug checkpoint": ["roost debug checkpoint job", "roost debug checkpoint --json job 3"],
    "version": ["roost version", "roost --version"],
    "completion": ["roost completion bash > /etc/bash_completion.d/roost",
                   "roost completion zsh > \"${fpath[1]}/_roost\"",
                   "roost completion fish > ~/.config/fish/completions/roost.fish"],
    "rm": ["roost rm job", "roost rm -f job"],
    "prune": ["roost prune", "roost prune --older-than 24h --state failed --dry-run"],
}


def client_version() -> str:
    """This client's release, from the installed package's metadata."""
    import importlib.metadata
    try:
        return importlib.metadata.version("roost")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


# ---------------------------------------------------------------- the parser


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """A parser's subcommands by name (aliases included), or {} when it has none."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def walk(parser: argparse.ArgumentParser, path: str = "") -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """Every parser of the command line with its command path ("" for `roost` itself,
    "modules prepare" for a nested one), each once."""
    yield path, parser
    seen: set[int] = set()
    for name, child in subcommands(parser).items():
        if id(child) not in seen:
            seen.add(id(child))
            yield from walk(child, f"{path} {name}".strip())


def finish(parser: argparse.ArgumentParser) -> None:
    """Gives every command's --help its examples (kept as written: RawDescription), unless
    the command brought its own."""
    for path, command in walk(parser):
        examples = EXAMPLES.get(path)
        if not path or not examples or "example" in (command.epilog or ""):
            continue
        text = "example:\n" + "\n".join(f"  {line}" for line in examples)
        command.epilog = f"{command.epilog}\n\n{text}" if command.epilog else text
        command.formatter_class = argparse.RawDescriptionHelpFormatter


def add_commands(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """`roost version` and `roost completion SHELL`."""
    sub.add_parser("version", parents=[common],
                   help="show the client's version, and the daemon's (version, API, node)")
    completion = sub.add_parser("completion", parents=[common],
                                help="print a shell completion script (bash, zsh or fish)")
    completion.add_argument("shell", choices=["bash", "zsh", "fish"], metavar="bash|zsh|fish",
                            help="the shell to complete for")


# ---------------------------------------------------------------- version, completion


def client_dict() -> dict[str, str]:
    """The client half of `roost version`."""
    return {"version": client_version(), "api": pb.DESCRIPTOR.package,
            "python": platform.python_version()}


def cmd_version(client: Client, ns: argparse.Namespace) -> int:
    """The client's version, then the daemon's: with no daemon, the client part and the error
    (exit 125), as `docker version` does."""
    mine = client_dict()
    if ns.json:
        try:
            server = display.message_dict(client.version(timeout=15))
        except RoostClientError:
            print(json.dumps({"client": mine}, indent=2), flush=True)
            raise
        print(json.dumps({"client": mine, "server": server}, indent=2))
        return 0
    print("Client:\n" + _pairs(mine), flush=True)
    version = client.version(timeout=15)
    print(f"Server: roostd at {client.addr}\n" + _pairs(display.message_dict(version)))
    if version.api and version.api != mine["api"]:
        say(f"warning: the daemon serves {version.api}, this client speaks {mine['api']}")
    return 0


def _pairs(values: dict[str, Any]) -> str:
    width = max(len(k) for k in values) + 2
    return "\n".join(f" {(k.replace('_', ' ') + ':'):<{width}}{v}" for k, v in values.items())


def cmd_completion(ns: argparse.Namespace) -> int:
    """Prints the completion script for a shell, generated from the parser itself."""
    from roost.client import completion
    from roost.client.cli import build_parser
    script = completion.script(ns.shell, build_parser())
    if ns.json:
        print(json.dumps({"shell": ns.shell, "script": script}, indent=2))
    else:
        sys.stdout.write(script)
    return 0


# ---------------------------------------------------------------- errors


def say(message: str) -> None:
    sys.stderr.write(f"roost: {message}\n")
    sys.stderr.flush()


def tls_hint(err: RoostClientError, addr: str, tls: TLS | None) -> str | None:
    """One line for a TLS mismatch, or None: a plaintext client at a TLS daemon sees only
    "Socket closed", a TLS client at a plaintext one a handshake error; a direct handshake
    tells which side is which."""
    if err.error or err.code_name not in ("UNAVAILABLE", "UNKNOWN") or is_local_socket(addr):
        return None
    answer = speaks_tls(addr)
    if tls is None and answer is True:
        return (f"roostd at {addr} speaks TLS: give --tls-ca, --tls-cert and --tls-key "
                "(or $ROOST_TLS_CA, $ROOST_TLS_CERT, $ROOST_TLS_KEY)")
    if tls is not None and answer is False:
        return (f"roostd at {addr} does not speak TLS: drop --tls-ca, --tls-cert and --tls-key "
                "(and $ROOST_TLS_*)")
    return None


# ---------------------------------------------------------------- stdin


def guest_stdin(ns: argparse.Namespace) -> bytes:
    """The guest's stdin, fixed at start: `--stdin FILE`, or all of roost's own stdin with
    `-i` or `--stdin -`. Without either, a pipe or file on stdin is not read (as docker), but
    said once, so data is never dropped silently."""
    name = ns.stdin
    if getattr(ns, "interactive", False) and name not in (None, "-"):
        raise LocalError("-i and --stdin FILE both give the guest's stdin: use one")
    if name == "-" or getattr(ns, "interactive", False):
        return sys.stdin.buffer.read()
    if name is not None:
        try:
            with open(name, "rb") as f:
                return f.read()
        except OSError as err:
            raise LocalError(f"--stdin {name}: {err.strerror}") from None
    if stdin_has_data():
        say("stdin is not forwarded to the guest without -i (or --stdin FILE)")
    return b""


def stdin_has_data(fd: int = 0) -> bool:
    """Whether fd 0 is a pipe, socket or file with bytes waiting (never a terminal, never
    /dev/null); reads nothing."""
    try:
        info = os.fstat(fd)
        if stat.S_ISREG(info.st_mode):
            return info.st_size > os.lseek(fd, 0, os.SEEK_CUR)
        if stat.S_ISFIFO(info.st_mode) or stat.S_ISSOCK(info.st_mode):
            waiting = fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0")
            return int.from_bytes(waiting, sys.byteorder) > 0
    except OSError:
        pass
    return False


# ---------------------------------------------------------------- JSON records


def chunk_record(chunk: pb.LogChunk) -> dict[str, Any]:
    """A log chunk as a JSON record: its fields by proto name, the stream as "stdout" or
    "stderr", `data` as text when it is UTF-8, else `data_base64`."""
    record = display.message_dict(chunk)
    record["stream"] = "stderr" if chunk.stream == pb.STDERR else "stdout"
    record.pop("data", None)
    try:
        record["data"] = chunk.data.decode("utf-8")
    except UnicodeDecodeError:
        record["data_base64"] = base64.b64encode(chunk.data).decode("ascii")
    return record


def print_json_line(record: dict[str, Any]) -> None:
    """One JSON record per line (JSON Lines), flushed: a follower sees it at once."""
    sys.stdout.write(json.dumps(record, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def write_chunk_json(chunk: pb.LogChunk) -> None:
    """`write` for follow_logs under --json."""
    print_json_line(chunk_record(chunk))


class CopyTally:
    """Counts what a copy-out stream carries, for `cp --json`'s summary."""

    def __init__(self, chunks: Iterable[pb.FileChunk]) -> None:
        self._chunks = chunks
        self.counts = {"files": 0, "directories": 0, "symlinks": 0, "hardlinks": 0, "bytes": 0}

    def __iter__(self) -> Iterator[pb.FileChunk]:
        names = {pb.FileEntry.FILE: "files", pb.FileEntry.DIRECTORY: "directories",
                 pb.FileEntry.SYMLINK: "symlinks", pb.FileEntry.HARDLINK: "hardlinks"}
        for chunk in self._chunks:
            if chunk.kind in names and not (chunk.kind == pb.FileEntry.FILE and chunk.offset):
                self.counts[names[chunk.kind]] += 1
            self.counts["bytes"] += len(chunk.data)
            yield chunk
