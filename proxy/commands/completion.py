"""`authproxy completion bash|zsh`: a completion script for the shell, generated from the
command line's own parser (so a new command or flag cannot be missing from it), and
`authproxy completion --list credentials|endpoints|paths` that the scripts call to complete
names from the config in use (`-c FILE`, else $AUTHPROXY_CONFIG, else config/proxy.yaml).

Names are read from the YAML alone, without expanding `${VAR}` or validating: completing
`authproxy token <TAB>` must work in a shell where the secrets' variables are not set, and
must never print anything but names.
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path
from typing import Any

import yaml

# What a command's positional argument completes to: a list the script asks for, or words.
_POSITIONALS = {"token": "credentials", "login": "credentials", "explain": "paths"}
_WORDS = {"completion": ("bash", "zsh")}
LISTS = ("credentials", "endpoints", "paths")


def names(config_path: str, what: str) -> list[str]:
    """Credential names, endpoint names or endpoint paths in the config; [] when it cannot be
    read (completion then offers nothing rather than an error in the middle of a line)."""
    try:
        data = yaml.safe_load(Path(config_path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return []
    if not isinstance(data, dict):
        return []
    if what == "credentials":
        creds = data.get("credentials")
        return [str(n) for n in creds] if isinstance(creds, dict) else []
    endpoints = [e for e in data.get("endpoints") or () if isinstance(e, dict) and "name" in e]
    if what == "endpoints":
        return [str(e["name"]) for e in endpoints]
    paths = []
    for e in endpoints:
        prefix = str(e.get("prefix") or ("/" if e.get("host") else f"/{e['name']}"))
        paths.append(prefix if prefix.endswith("/") else prefix + "/")
    return sorted(set(paths))


def script(shell: str, parser: argparse.ArgumentParser) -> str:
    commands = _commands(parser)
    return _bash(commands) if shell == "bash" else _zsh(commands)


class _Command:
    def __init__(self, name: str, help: str, sub: argparse.ArgumentParser) -> None:
        self.name, self.help = name, help
        self.flags: list[tuple[list[str], str, tuple[str, ...] | None, bool]] = []
        for action in sub._actions:
            if not action.option_strings:
                continue
            takes = action.nargs != 0
            choices = tuple(str(c) for c in action.choices) if action.choices else None
            self.flags.append((list(action.option_strings), action.help or "", choices, takes))

    def options(self) -> list[str]:
        return [o for opts, *_ in self.flags for o in opts]

    def valued(self) -> list[str]:
        return [o for opts, _, _, takes in self.flags if takes for o in opts]


def _commands(parser: argparse.ArgumentParser) -> list[_Command]:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {c.dest: c.help or "" for c in sub._choices_actions}
    return [_Command(name, helps.get(name, ""), p) for name, p in sub.choices.items()]


def _words(items: Any) -> str:
    return " ".join(items)


def _bash(commands: list[_Command]) -> str:
    valued = sorted({o for c in commands for o in c.valued()})
    # A flag's choices depend on the command (check --format text|json, token --format
    # env|credential-process): the case is on "command:flag".
    choice_cases = []
    free: set[str] = set()  # flags whose value is anything: nothing to offer
    for c in commands:
        for opts, _, choices, takes in c.flags:
            if choices:
                choice_cases.append(f"        {'|'.join(f'{c.name}:{o}' for o in opts)}) "
                                    f"COMPREPLY=($(compgen -W {shlex.quote(_words(choices))} "
                                    "-- \"$cur\")); return ;;")
            elif takes and opts[0] not in ("-c", "--config"):
                free.update(f"{c.name}:{o}" for o in opts)
    option_cases = [f"        {c.name}) opts={shlex.quote(_words(c.options()))} ;;"
                    for c in commands]
    positional_cases = [f"        {cmd}) words=$(authproxy completion --list {what} "
                        "\"${cfg[@]}\" 2>/dev/null) ;;" for cmd, what in _POSITIONALS.items()]
    positional_cases += [f"        {cmd}) words={shlex.quote(_words(w))} ;;"
                         for cmd, w in _WORDS.items()]
    return f"""\
# bash completion for authproxy: eval "$(authproxy completion bash)" in ~/.bashrc
_authproxy() {{
    local cur=${{COMP_WORDS[COMP_CWORD]}} prev=${{COMP_WORDS[COMP_CWORD-1]}}
    local cmd="" i opts="" words=""
    local -a cfg=()
    for ((i = 1; i < COMP_CWORD; i++)); do
        case ${{COMP_WORDS[i]}} in
            -c|--config) cfg=(-c "${{COMP_WORDS[i+1]}}"); ((i++)) ;;
            {'|'.join(o for o in valued if o not in ('-c', '--config'))}) ((i++)) ;;
            -*) ;;
            *) [ -z "$cmd" ] && cmd=${{COMP_WORDS[i]}} ;;
        esac
    done
    if [ -z "$cmd" ]; then
        COMPREPLY=($(compgen -W {shlex.quote(_words(c.name for c in commands))} -- "$cur"))
        [[ $cur == -* ]] && COMPREPLY=($(compgen -W "--help --version" -- "$cur"))
        return
    fi
    case $prev in
        -c|--config) compopt -o filenames 2>/dev/null; COMPREPLY=($(compgen -f -- "$cur"))
            return ;;
    esac
    case $cmd:$prev in
{chr(10).join(choice_cases)}
        {'|'.join(sorted(free))}) return ;;
    esac
    case $cmd in
{chr(10).join(option_cases)}
    esac
    if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "$opts" -- "$cur"))
        return
    fi
    case $cmd in
{chr(10).join(positional_cases)}
    esac
    COMPREPLY=($(compgen -W "$words" -- "$cur"))
}}
complete -F _authproxy authproxy
"""


def _zq(text: str) -> str:
    """Text inside a zsh _arguments spec's [description], single-quoted."""
    return text.replace("'", "'\\''").replace("[", "(").replace("]", ")").replace(":", " -")


def _zsh(commands: list[_Command]) -> str:
    described = "\n".join(f"        '{c.name}:{_zq(c.help)}'" for c in commands)
    cases = []
    for c in commands:
        specs = []
        for opts, help, choices, takes in c.flags:
            names = opts[0] if len(opts) == 1 else "{" + ",".join(opts) + "}"
            exclusive = f"'({' '.join(opts)})'" if len(opts) > 1 else ""
            value = ""
            if takes:
                if opts[0] in ("-c", "--config"):
                    value = ":file:_files"
                elif choices:
                    value = f":value:({' '.join(choices)})"
                else:
                    value = ":value: "
            specs.append(f"{exclusive}{names}'[{_zq(help)}]{value}'")
        if c.name in _POSITIONALS:
            # _arguments calls an action with compadd options of its own: one function per
            # list, so that they go through to compadd.
            specs.append(f"'1:{_POSITIONALS[c.name]}:_authproxy_{_POSITIONALS[c.name]}'")
        elif c.name in _WORDS:
            specs.append(f"'1:shell:({' '.join(_WORDS[c.name])})'")
        cases.append(f"        {c.name}) _arguments -s \\\n            "
                     + " \\\n            ".join(specs) + " ;;")
    lists = "\n".join(f"_authproxy_{what}() {{ _authproxy_list {what} \"$@\" }}"
                      for what in LISTS)
    return f"""\
#compdef authproxy
# zsh completion for authproxy: put this in a file _authproxy on $fpath (or
# `source <(authproxy completion zsh)` after compinit)

# _authproxy_list WHAT [compadd options]: names from the config named by -c on the line.
_authproxy_list() {{
    local what=$1 i
    shift
    local -a cfg found
    for ((i = 1; i < $#words; i++)); do
        [[ $words[i] == (-c|--config) ]] && cfg=(-c ${{words[i+1]}})
    done
    found=(${{(f)"$(authproxy completion --list $what $cfg 2>/dev/null)"}})
    compadd "$@" -a found
}}
{lists}

_authproxy() {{
    local curcontext=$curcontext state line
    local -a commands
    commands=(
{described}
    )
    _arguments -C '(- *)--version[show the version]' '(- *)'{{-h,--help}}'[show help]' \\
        '1:command:->command' '*::argument:->argument'
    case $state in
    command) _describe -t commands 'authproxy command' commands ;;
    argument)
        case $line[1] in
{chr(10).join(cases)}
        esac ;;
    esac
}}

if [[ $zsh_eval_context[-1] == loadautofunc ]]; then
    _authproxy "$@"
else
    compdef _authproxy authproxy
fi
"""
