"""Renders docs/API.md, the Control API reference, from proto/roost/v1/control.proto.

    .venv/bin/python -m docs.gen_api            # rewrite docs/API.md
    .venv/bin/python -m docs.gen_api --check    # exit 1 if docs/API.md is stale

protoc itself parses the proto (`--descriptor_set_out --include_source_info`), so the
reference reads the same comments, types and numbers the generated code is built from; this
module only walks the descriptor and its SourceCodeInfo. `missing_comments` lists what has no
comment (tests/unit/test_api_doc.py requires none).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import descriptor_pb2 as d

ROOT = Path(__file__).resolve().parent.parent
PROTO = "roost/v1/control.proto"
OUTPUT = ROOT / "docs" / "API.md"
REGENERATE = ".venv/bin/python -m docs.gen_api"

# SourceCodeInfo paths: the field numbers of FileDescriptorProto, DescriptorProto, ...
SYNTAX, MESSAGE, ENUM, SERVICE = 12, 4, 5, 6
M_FIELD, M_NESTED, M_ENUM = 2, 3, 4
E_VALUE = 2
S_METHOD = 2

_SCALARS = {v: k.removeprefix("TYPE_").lower() for k, v in d.FieldDescriptorProto.Type.items()}
_WELL_KNOWN = "https://protobuf.dev/reference/protobuf/google.protobuf/#"


def descriptor(root: Path = ROOT) -> d.FileDescriptorProto:
    """control.proto as protoc sees it, comments included."""
    import grpc_tools
    from grpc_tools import protoc
    include = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "control.pb")
        args = ["protoc", f"-I{root / 'proto'}", f"-I{include}", f"--descriptor_set_out={out}",
                "--include_source_info", str(root / "proto" / PROTO)]
        if protoc.main(args) != 0:
            raise SystemExit(f"protoc failed on proto/{PROTO}")
        files = d.FileDescriptorSet.FromString(Path(out).read_bytes())
    return files.file[0]


@dataclass
class Comments:
    """The comments protoc attached to each element, by its SourceCodeInfo path."""

    by_path: dict[tuple[int, ...], d.SourceCodeInfo.Location]

    @classmethod
    def of(cls, file: d.FileDescriptorProto) -> Comments:
        return cls({tuple(loc.path): loc for loc in file.source_code_info.location})

    def text(self, path: Sequence[int]) -> str:
        """Leading and trailing comment of one element, as paragraphs ("" for none)."""
        loc = self.by_path.get(tuple(path))
        if loc is None:
            return ""
        parts = [_dedent(c) for c in (loc.leading_comments, loc.trailing_comments) if c.strip()]
        return "\n\n".join(parts)


def _dedent(comment: str) -> str:
    lines = [line[1:] if line.startswith(" ") else line for line in comment.strip("\n").split("\n")]
    return "\n".join(lines).strip()


def _cell(text: str) -> str:
    """A comment inside a table cell: one line, pipes escaped."""
    return " ".join(text.split()).replace("|", "\\|")


def _anchor(name: str) -> str:
    return name.lower().replace(".", "")


def _type_ref(type_name: str, package: str) -> str:
    """A message or enum type as a link: ours to its section, well-known ones to protobuf.dev."""
    name = type_name.lstrip(".")
    if name.startswith(package + "."):
        local = name[len(package) + 1:]
        return f"[{local}](#{_anchor(local)})"
    if name.startswith("google.protobuf."):
        short = name.removeprefix("google.protobuf.")
        return f"[{name}]({_WELL_KNOWN}{short.lower()})"
    return f"`{name}`"


def _field_type(f: d.FieldDescriptorProto, package: str) -> str:
    if f.type in (d.FieldDescriptorProto.TYPE_MESSAGE, d.FieldDescriptorProto.TYPE_ENUM):
        base = _type_ref(f.type_name, package)
    else:
        base = f"`{_SCALARS[f.type]}`"
    if f.label == d.FieldDescriptorProto.LABEL_REPEATED:
        return f"repeated {base}"
    if f.proto3_optional:
        return f"optional {base}"
    return base


@dataclass
class Element:
    """Anything the reference documents, with the path of its comment."""

    kind: str          # rpc | field | value
    name: str
    path: tuple[int, ...]


def _messages(file: d.FileDescriptorProto) -> Iterator[tuple[str, d.DescriptorProto, tuple[int, ...]]]:
    """Every message, nested ones after their parent, as (qualified name, message, path)."""
    def walk(prefix: str, msgs: Sequence[d.DescriptorProto], path: tuple[int, ...], number: int):
        for i, m in enumerate(msgs):
            here = (*path, number, i)
            name = f"{prefix}{m.name}"
            yield name, m, here
            yield from walk(f"{name}.", m.nested_type, here, M_NESTED)
    yield from walk("", file.message_type, (), MESSAGE)


def _enums(file: d.FileDescriptorProto) -> Iterator[tuple[str, d.EnumDescriptorProto, tuple[int, ...]]]:
    """Every enum, top-level then nested, as (qualified name, enum, path)."""
    for i, e in enumerate(file.enum_type):
        yield e.name, e, (ENUM, i)
    for name, m, path in _messages(file):
        for i, e in enumerate(m.enum_type):
            yield f"{name}.{e.name}", e, (*path, M_ENUM, i)


def elements(file: d.FileDescriptorProto) -> Iterator[Element]:
    for si, service in enumerate(file.service):
        for mi, method in enumerate(service.method):
            yield Element("rpc", f"{service.name}.{method.name}", (SERVICE, si, S_METHOD, mi))
    for name, m, path in _messages(file):
        for fi, f in enumerate(m.field):
            yield Element("field", f"{name}.{f.name}", (*path, M_FIELD, fi))
    for name, e, path in _enums(file):
        for vi, v in enumerate(e.value):
            yield Element("value", f"{name}.{v.name}", (*path, E_VALUE, vi))


def missing_comments(file: d.FileDescriptorProto) -> list[str]:
    """Every RPC, field and enum value without a comment, as "field Module.name"."""
    comments = Comments.of(file)
    return [f"{e.kind} {e.name}" for e in elements(file) if not comments.text(e.path)]


def render(file: d.FileDescriptorProto) -> str:
    """The whole reference, in the proto's own order: services, messages, enums."""
    comments, package = Comments.of(file), file.package
    out = [f"# roost Control API reference (`{package}`)", "",
           f"<!-- Generated from proto/{PROTO} by `{REGENERATE}`: edit the proto, not this file. -->",
           ""]
    intro = comments.text((SYNTAX,))
    if intro:
        out += [intro, ""]
    out += ["Times are `google.protobuf.Timestamp` and durations `google.protobuf.Duration`: in "
            "JSON (grpcurl, `roost ... --json`) an RFC 3339 string (`\"2026-12-07T12:43:38.123456Z\"`) "
            "and seconds with an `s` (`\"1.500s\"`). An unset time means the event has not happened.",
            ""]
    out += _contents(file)
    for si, service in enumerate(file.service):
        out += _service(service, (SERVICE, si), comments, package)
    out += ["## Messages", ""]
    for name, m, path in _messages(file):
        out += _message(name, m, path, comments, package)
    out += ["## Enums", ""]
    for name, e, path in _enums(file):
        out += _enum(name, e, path, comments)
    return "\n".join(out).rstrip("\n") + "\n"


def _contents(file: d.FileDescriptorProto) -> list[str]:
    lines = ["## Contents", ""]
    for service in file.service:
        lines.append(f"- [service {service.name}](#service-{_anchor(service.name)})")
        lines += [f"  - [{m.name}](#rpc-{_anchor(m.name)})" for m in service.method]
    lines.append("- [Messages](#messages)")
    lines.append("- [Enums](#enums)")
    return [*lines, ""]


def _service(service: d.ServiceDescriptorProto, path: tuple[int, ...], comments: Comments,
             package: str) -> list[str]:
    lines = [f"## service {service.name}", ""]
    if text := comments.text(path):
        lines += [text, ""]
    for mi, m in enumerate(service.method):
        request = ("stream " if m.client_streaming else "") + _type_ref(m.input_type, package)
        response = ("stream " if m.server_streaming else "") + _type_ref(m.output_type, package)
        lines += [f"### rpc {m.name}", "", f"`{m.name}` ({request}) returns ({response})", ""]
        if text := comments.text((*path, S_METHOD, mi)):
            lines += [text, ""]
    return lines


def _message(name: str, m: d.DescriptorProto, path: tuple[int, ...], comments: Comments,
             package: str) -> list[str]:
    lines = [f"### {name}", ""]
    if text := comments.text(path):
        lines += [text, ""]
    if m.field:
        lines += ["| Field | Number | Type | Description |", "|---|---|---|---|"]
        for fi, f in enumerate(m.field):
            oneof = ""
            if f.HasField("oneof_index") and not f.proto3_optional:
                oneof = f" (oneof `{m.oneof_decl[f.oneof_index].name}`)"
            lines.append(f"| `{f.name}` | {f.number} | {_field_type(f, package)}{oneof} | "
                         f"{_cell(comments.text((*path, M_FIELD, fi)))} |")
        lines.append("")
    else:
        lines += ["No fields.", ""]
    reserved = [str(r.start) if r.end == r.start + 1 else f"{r.start}-{r.end - 1}"
                for r in m.reserved_range]
    if reserved:
        names = ", ".join(f"`{n}`" for n in m.reserved_name)
        lines += [f"Reserved (fields of earlier versions): {', '.join(reserved)}"
                  + (f"; {names}" if names else "") + ".", ""]
    return lines


def _enum(name: str, e: d.EnumDescriptorProto, path: tuple[int, ...], comments: Comments) -> list[str]:
    lines = [f"### {name}", ""]
    if text := comments.text(path):
        lines += [text, ""]
    lines += ["| Value | Number | Description |", "|---|---|---|"]
    for vi, v in enumerate(e.value):
        lines.append(f"| `{v.name}` | {v.number} | {_cell(comments.text((*path, E_VALUE, vi)))} |")
    return [*lines, ""]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m docs.gen_api", description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="do not write: exit 1 if docs/API.md differs from the proto")
    ns = parser.parse_args(argv)
    text = render(descriptor())
    if ns.check:
        if not OUTPUT.exists() or OUTPUT.read_text() != text:
            print(f"docs/API.md is stale: run {REGENERATE}", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text)
    print(f"wrote {os.path.relpath(OUTPUT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
