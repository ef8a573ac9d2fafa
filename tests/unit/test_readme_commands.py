"""The README's command table ("Using it") and the CLI's parser agree: every command the parser
has is shown there, and every `roost ...` line there is a command the parser has. Generic: a
command added to the parser (or the README) without the other fails here."""
from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

from roost.client import cli, conventions

README = Path(__file__).resolve().parents[2] / "README.md"


def using_it_block(text: str) -> str:
    """The first ```sh block under "## Using it"."""
    section = text.split("## Using it", 1)[1]
    match = re.search(r"```sh\n(.*?)```", section, re.S)
    assert match, "README's 'Using it' section has no ```sh block"
    return match.group(1)


def documented_commands(block: str, parser: argparse.ArgumentParser) -> set[str]:
    """The command paths of every `roost ...` in the block ("modules prepare" for nested ones),
    flags and their values skipped as the parser would."""
    found = set()
    for line in block.splitlines():
        code = line.split("#", 1)[0]
        for segment in re.split(r"[;|&]+|\$\(", code):
            words = shlex.split(segment.replace(">", " > "))
            if "roost" in words:
                found.add(command_path(words[words.index("roost") + 1:], parser))
    return found


def command_path(words: list[str], parser: argparse.ArgumentParser) -> str:
    path, current = [], parser
    i = 0
    while i < len(words):
        word = words[i]
        if word.startswith("-"):
            i += 2 if word in conventions.VALUE_FLAGS else 1
            continue
        subs = conventions.subcommands(current)
        if word not in subs:
            break
        path.append(word)
        current = subs[word]
        i += 1
    return " ".join(path)


def parser_commands(parser: argparse.ArgumentParser) -> set[str]:
    """Every runnable command path (a group that needs a subcommand, like `debug`, is shown
    through its subcommands)."""
    runnable = set()
    for path, command in conventions.walk(parser):
        needs_sub = any(isinstance(a, argparse._SubParsersAction) and a.required
                        for a in command._actions)
        if path and not needs_sub:
            runnable.add(path)
    return runnable


def test_readme_lists_every_command_and_only_real_ones() -> None:
    parser = cli.build_parser()
    documented = documented_commands(using_it_block(README.read_text()), parser)
    assert "" not in documented, "a `roost` line in the README names no command of the parser"
    real = parser_commands(parser)
    assert not real - documented, f"commands missing from README's 'Using it': {sorted(real - documented)}"
    assert not documented - real, f"README shows commands the CLI does not have: {sorted(documented - real)}"


def test_the_parser_of_the_readme_test_sees_nested_commands() -> None:
    parser = cli.build_parser()
    assert command_path(["--addr", "h:1", "modules", "prepare", "x.wasm"], parser) == "modules prepare"
    assert command_path(["ps", "-a"], parser) == "ps"
    assert "debug" not in parser_commands(parser) and "debug checkpoint" in parser_commands(parser)
