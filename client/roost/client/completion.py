"""`roost completion bash|zsh|fish`: shell completion scripts generated from the parser.

The scripts are data (the commands, their flags, what each argument is) and one small
function per shell, so a new command or flag is completed as soon as it is in the parser.
Execution ids are completed live, from `roost ps -aq` (with the --addr and --tls-* flags
already on the command line); MODULE.wasm arguments from *.wasm files; file and directory
flags (--stdin, --tls-*, --mount) from the filesystem.
"""
from __future__ import annotations

import argparse
import shlex
from dataclasses import dataclass, field

from roost.client.conventions import walk

ROOT = "-"      # the command path of `roost` itself (a key every shell's arrays can hold)


@dataclass
class Command:
    """One parser of the command line as completion sees it."""

    path: str                                   # ROOT, "run", "modules prepare"
    help: str = ""
    subcommands: list[str] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    value_flags: list[str] = field(default_factory=list)
    positionals: list[str] = field(default_factory=list)    # kinds, in order
    flag_help: dict[str, str] = field(default_factory=dict)


def kind_of(action: argparse.Action) -> str:
    """What an argument's value is: wasm, id, file, dir, words:A,B (choices), or - (any)."""
    if action.choices and not isinstance(action, argparse._SubParsersAction):
        return "words:" + ",".join(map(str, action.choices))
    meta = str(action.metavar or action.dest or "").upper()
    if "WASM" in meta:
        return "wasm"
    if meta.startswith("ID"):
        return "id"
    if meta in ("FILE", "PEM", "LOCALPATH", "PATH"):
        return "file"
    if meta.startswith("HOSTDIR"):
        return "dir"
    return "-"


def model(parser: argparse.ArgumentParser) -> list[Command]:
    """Every command of the parser, root first."""
    commands = []
    for path, command in walk(parser):
        entry = Command(path or ROOT, help=command.description or "")
        for action in command._actions:
            if isinstance(action, argparse._SubParsersAction):
                entry.subcommands = list(action.choices)
                helps = {a.dest: a.help or "" for a in action._choices_actions}
                entry.flag_help.update({f"sub:{k}": v for k, v in helps.items()})
            elif action.option_strings:
                entry.flags += action.option_strings
                if action.nargs != 0:
                    entry.value_flags += action.option_strings
                for option in action.option_strings:
                    entry.flag_help[option] = action.help or ""
                    entry.flag_help[f"kind:{option}"] = kind_of(action)
            else:
                entry.positionals.append(kind_of(action))
        commands.append(entry)
    return commands


def script(shell: str, parser: argparse.ArgumentParser) -> str:
    """The completion script for `shell` (bash, zsh or fish)."""
    commands = model(parser)
    return {"bash": bash, "zsh": zsh, "fish": fish}[shell](commands)


def _flag_kinds(commands: list[Command]) -> dict[str, str]:
    kinds: dict[str, str] = {}
    for c in commands:
        for flag in c.value_flags:
            kinds.setdefault(flag, c.flag_help.get(f"kind:{flag}", "-"))
    return kinds


def _assoc(pairs: dict[str, str]) -> str:
    return " ".join(f"[{shlex.quote(k)}]={shlex.quote(v)}" for k, v in pairs.items())


BASH_FUNCTIONS = r"""
_roost_kind() {
    case $1 in
        wasm) compopt -o filenames 2>/dev/null
              COMPREPLY=($(compgen -f -X '!*.wasm' -- "$cur") $(compgen -d -- "$cur")) ;;
        file) compopt -o filenames 2>/dev/null; COMPREPLY=($(compgen -f -- "$cur")) ;;
        dir) compopt -o filenames 2>/dev/null; COMPREPLY=($(compgen -d -- "$cur")) ;;
        id) COMPREPLY=($(compgen -W "$("${COMP_WORDS[0]}" "${conn[@]}" ps -aq 2>/dev/null)" -- "$cur")) ;;
        words:*) local words=${1#words:}; COMPREPLY=($(compgen -W "${words//,/ }" -- "$cur")) ;;
    esac
}

_roost() {
    local cur=${COMP_WORDS[COMP_CWORD]} prev= cmdpath=- npos=0 i w
    local -a conn=()
    COMPREPLY=()
    ((COMP_CWORD > 0)) && prev=${COMP_WORDS[COMP_CWORD-1]}
    for ((i = 1; i < COMP_CWORD; i++)); do
        w=${COMP_WORDS[i]}
        [[ $w == -- ]] && return 0          # the guest's arguments: the shell's default
        if [[ $w == -* ]]; then
            if [[ " ${_roost_value_flags[$cmdpath]} " == *" $w "* ]]; then
                case $w in --addr|--tls-*) conn+=("$w" "${COMP_WORDS[i+1]}") ;; esac
                ((i++))
            fi
            continue
        fi
        if ((npos == 0)) && [[ " ${_roost_subs[$cmdpath]} " == *" $w "* ]]; then
            if [[ $cmdpath == - ]]; then cmdpath=$w; else cmdpath="$cmdpath $w"; fi
        else
            ((npos++))
        fi
    done
    if ((COMP_CWORD > 1)) && [[ " ${_roost_value_flags[$cmdpath]} " == *" $prev "* ]]; then
        _roost_kind "${_roost_flag_kind[$prev]}"
        return 0
    fi
    if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "${_roost_flags[$cmdpath]}" -- "$cur"))
        return 0
    fi
    if ((npos == 0)) && [[ -n ${_roost_subs[$cmdpath]} ]]; then
        COMPREPLY=($(compgen -W "${_roost_subs[$cmdpath]}" -- "$cur"))
        return 0
    fi
    local -a kinds=(${_roost_pos[$cmdpath]})
    _roost_kind "${kinds[npos]:--}"
}

complete -o default -F _roost roost
"""


def bash(commands: list[Command]) -> str:
    """bash (4.2+): `source <(roost completion bash)`, or the file in bash_completion.d."""
    data = {
        "_roost_subs": {c.path: " ".join(c.subcommands) for c in commands if c.subcommands},
        "_roost_flags": {c.path: " ".join(c.flags) for c in commands},
        "_roost_value_flags": {c.path: " ".join(c.value_flags) for c in commands},
        "_roost_pos": {c.path: " ".join(c.positionals) for c in commands if c.positionals},
        "_roost_flag_kind": _flag_kinds(commands),
    }
    lines = ["# bash completion for roost (generated by `roost completion bash`)"]
    lines += [f"declare -gA {name}=({_assoc(values)})" for name, values in data.items()]
    return "\n".join(lines) + "\n" + BASH_FUNCTIONS


ZSH_FUNCTIONS = r"""
_roost_kind() {
    case $1 in
        wasm) _files -g '*.wasm' ;;
        file) _files ;;
        dir) _files -/ ;;
        id) local -a ids; ids=(${(f)"$(${words[1]} $conn ps -aq 2>/dev/null)"}); compadd -a ids ;;
        words:*) local choices=${1#words:}; compadd -- ${(s:,:)choices} ;;
    esac
}

_roost() {
    local cur=${words[CURRENT]} prev=${words[CURRENT-1]} cmdpath=- w
    local -i i npos=0
    local -a conn kinds
    for (( i = 2; i < CURRENT; i++ )); do
        w=${words[i]}
        if [[ $w == -- ]]; then _files; return; fi
        if [[ $w == -* ]]; then
            if [[ " ${_roost_value_flags[$cmdpath]} " == *" $w "* ]]; then
                [[ $w == --addr || $w == --tls-* ]] && conn+=($w ${words[i+1]})
                (( i++ ))
            fi
            continue
        fi
        if (( npos == 0 )) && [[ " ${_roost_subs[$cmdpath]} " == *" $w "* ]]; then
            if [[ $cmdpath == - ]]; then cmdpath=$w; else cmdpath="$cmdpath $w"; fi
        else
            (( npos++ ))
        fi
    done
    if (( CURRENT > 2 )) && [[ " ${_roost_value_flags[$cmdpath]} " == *" $prev "* ]]; then
        _roost_kind ${_roost_flag_kind[$prev]:--}
        return
    fi
    if [[ $cur == -* ]]; then
        compadd -- ${=_roost_flags[$cmdpath]}
        return
    fi
    if (( npos == 0 )) && [[ -n ${_roost_subs[$cmdpath]} ]]; then
        compadd -- ${=_roost_subs[$cmdpath]}
        return
    fi
    kinds=(${=_roost_pos[$cmdpath]})
    _roost_kind ${kinds[npos+1]:--}
}

if [[ $funcstack[1] == _roost ]]; then
    _roost "$@"
else
    compdef _roost roost
fi
"""


def _zsh_assoc(pairs: dict[str, str]) -> str:
    return " ".join(f"{shlex.quote(k)} {shlex.quote(v) if v else chr(39) * 2}" for k, v in pairs.items())


def zsh(commands: list[Command]) -> str:
    """zsh: the file `_roost` in a directory of $fpath, or `source <(roost completion zsh)`
    after compinit."""
    data = {
        "_roost_subs": {c.path: " ".join(c.subcommands) for c in commands if c.subcommands},
        "_roost_flags": {c.path: " ".join(c.flags) for c in commands},
        "_roost_value_flags": {c.path: " ".join(c.value_flags) for c in commands},
        "_roost_pos": {c.path: " ".join(c.positionals) for c in commands if c.positionals},
        "_roost_flag_kind": _flag_kinds(commands),
    }
    lines = ["#compdef roost", "# zsh completion for roost (generated by `roost completion zsh`)"]
    for name, values in data.items():
        lines += [f"typeset -gA {name}", f"{name}=({_zsh_assoc(values)})"]
    return "\n".join(lines) + "\n" + ZSH_FUNCTIONS


def _fish_text(text: str) -> str:
    text = " ".join(text.split())
    text = text if len(text) <= 70 else text[:67] + "..."
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _fish_condition(path: str) -> str:
    """The fish condition under which a command's own words apply."""
    if path == ROOT:
        return "__fish_use_subcommand"
    return "; and ".join(f"__fish_seen_subcommand_from {word}" for word in path.split())


FISH_KINDS = {
    "wasm": "-r -a '(__fish_complete_suffix .wasm)'",
    "file": "-r -F",
    "dir": "-r -a '(__fish_complete_directories)'",
    "id": "-x -a '(__roost_ids)'",
}


def _fish_value(kind: str) -> str:
    if kind.startswith("words:"):
        return f"-x -a {_fish_text(' '.join(kind[len('words:'):].split(',')))}"
    return FISH_KINDS.get(kind, "-x")


# Execution ids from `roost ps -aq`, at the daemon the command line names (--addr, --tls-*).
FISH_IDS = r"""
function __roost_ids
    set -l words (commandline -opc)
    set -l conn
    for i in (seq (count $words))
        switch $words[$i]
            case --addr --tls-ca --tls-cert --tls-key
                set -a conn $words[$i] $words[(math $i + 1)]
            case '--addr=*' '--tls-ca=*' '--tls-cert=*' '--tls-key=*'
                set -a conn $words[$i]
        end
    end
    roost $conn ps -aq 2>/dev/null
end
"""


def fish(commands: list[Command]) -> str:
    """fish: ~/.config/fish/completions/roost.fish, or `roost completion fish | source`."""
    lines = ["# fish completion for roost (generated by `roost completion fish`)",
             FISH_IDS.strip(), "complete -c roost -f"]
    for c in commands:
        where = _fish_condition(c.path)
        for sub in c.subcommands:
            nested = f"{where}; and not __fish_seen_subcommand_from {' '.join(c.subcommands)}" \
                if c.path != ROOT else where
            lines.append(f"complete -c roost -n {_fish_text(nested)} -a {sub} "
                         f"-d {_fish_text(c.flag_help.get(f'sub:{sub}', ''))}")
        for flag in c.flags:
            if flag in ("-h", "--help") and c.path != ROOT:
                continue
            opt = f"-l {flag[2:]}" if flag.startswith("--") else f"-s {flag[1:]}"
            value = _fish_value(c.flag_help.get(f"kind:{flag}", "-")) if flag in c.value_flags else ""
            cond = "" if c.path == ROOT else f"-n {_fish_text(where)} "
            lines.append(f"complete -c roost {cond}{opt} {value} "
                         f"-d {_fish_text(c.flag_help.get(flag, ''))}".replace("  ", " "))
        if c.path != ROOT and c.positionals and c.positionals[0] != "-":
            lines.append(f"complete -c roost -n {_fish_text(where)} {_fish_value(c.positionals[0])}")
    return "\n".join(lines) + "\n"
