"""The command line: the only module that reads argv, prints for humans or exits."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from proxy import __version__
from proxy.config import DEFAULT_CONFIG, Config, ConfigError, Problem, load_config

EXIT_OK, EXIT_FAIL, EXIT_CONFIG, EXIT_NO_MATCH = 0, 1, 2, 3


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="authproxy", description="Local authenticating reverse proxy for AWS API Gateway.",
        epilog="The config file is -c FILE, else $AUTHPROXY_CONFIG, else config/proxy.yaml.")
    p.add_argument("--version", action="version", version=f"authproxy {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_config(name: str, help: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help, description=help)
        sp.add_argument("-c", "--config", metavar="FILE", help="config file")
        return sp

    s = with_config("serve", "run the proxy until SIGINT/SIGTERM")
    s.add_argument("--host", help="listen address (default from the config: 127.0.0.1)")
    s.add_argument("--port", type=int, help="listen port (default from the config: 8080)")
    s.add_argument("--log-level", choices=("debug", "info", "warning", "error"))
    s.add_argument("--log-format", choices=("text", "json"))
    ck = with_config("check", "validate the config and print a summary (secrets redacted)")
    ck.add_argument("--format", choices=("text", "json"), default="text",
                    help="json: one object with every problem's file, line, key path and "
                         "message (for editors and scripts)")
    e = with_config("explain", "show how a request would be handled (no network)")
    e.add_argument("-X", "--request", dest="method", default="GET", metavar="METHOD")
    e.add_argument("-H", "--header", action="append", default=[], metavar="'Name: value'")
    e.add_argument("target", metavar="PATH", help="a path like /api/items or a full URL")
    t = with_config("token", "print the header value of credential NAME (for curl -H)")
    t.add_argument("name", metavar="NAME")
    t.add_argument("--claims", action="store_true", help="print the token's decoded claims")
    t.add_argument("--raw", action="store_true", help="print the bare token, without prefix")
    t.add_argument("--format", choices=("env", "credential-process"), default=None,
                   help="iam credentials: `export AWS_...` lines (default) or the AWS "
                        "credential_process JSON")
    lg = with_config("login", "sign in to Cognito interactively and save the refresh token")
    lg.add_argument("name", metavar="NAME")
    lg.add_argument("--no-browser", action="store_true",
                    help="flow authorization_code: only print the sign-in URL, open no browser "
                         "(wait for the sign-in: $AUTHPROXY_LOGIN_TIMEOUT seconds, default 300)")
    d = sub.add_parser("decode", help="print a JWT's header and claims (no verification)")
    d.add_argument("jwt")
    m = sub.add_parser("demo", help="run the proxy with a local fake API Gateway and show it")
    m.add_argument("--port", type=int, default=8080, help="proxy port (default 8080)")
    m.add_argument("--once", action="store_true",
                   help="exit after showing one request per strategy")
    c = with_config("completion", "print a shell completion script (bash or zsh)")
    c.add_argument("shell", nargs="?", choices=("bash", "zsh"),
                   help='e.g. eval "$(authproxy completion bash)" in ~/.bashrc')
    c.add_argument("--list", choices=("credentials", "endpoints", "paths"),
                   help="print these names from the config, one a line (what the scripts "
                        "complete with)")
    sub.add_parser("schema", help="print the JSON Schema of the config file (for editors)",
                   description="print the JSON Schema (draft 2020-12) of the config file; "
                   "editors on yaml-language-server use it through a first line "
                   "`# yaml-language-server: $schema=PATH`")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "decode":
            from proxy.commands.decode import decode
            return decode(args.jwt)
        if args.command == "demo":
            from proxy.commands.demo import demo
            return demo(args.port, args.once)
        if args.command == "schema":
            from proxy.commands.schema import schema
            return schema()
        if args.command == "completion":
            from proxy.commands import completion
            if args.list:
                print("\n".join(completion.names(config_path(args), args.list)))
            elif args.shell:
                print(completion.script(args.shell, _parser()), end="")
            else:
                print("authproxy completion: name a shell (bash or zsh)", file=sys.stderr)
                return EXIT_CONFIG
            return EXIT_OK
        if args.command == "check" and args.format == "json":
            from proxy.commands.check import check_json
            try:
                loaded = _load(args)
            except ConfigError as e:
                return check_json(None, e.source, e.problems)
            return check_json(loaded, loaded.source, [])
        config = _load(args)
        if args.command == "check":
            from proxy.commands.check import check
            return check(config)
        if args.command == "explain":
            from proxy.commands.explain import explain
            return explain(config, args.method, args.header, args.target)
        if args.command == "token":
            from proxy.commands.token import token_command
            return token_command(config, args.name, args.claims, args.raw, args.format)
        if args.command == "login":
            from proxy.commands.token import login_command
            return login_command(config, args.name, args.no_browser)
        return _serve(args, config)
    except ConfigError as e:
        for line in e.lines():
            print(line, file=sys.stderr)
        n = len(e.problems)
        print(f"{n} problem{'s' if n > 1 else ''} in {e.source}; "
              "`authproxy check` shows them again once fixed", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return EXIT_OK


def config_path(args: argparse.Namespace) -> str:
    return args.config or os.environ.get("AUTHPROXY_CONFIG") or DEFAULT_CONFIG


def _load(args: argparse.Namespace) -> Config:
    return _overrides(load_config(config_path(args)), args)


def _overrides(config: Config, args: argparse.Namespace) -> Config:
    """Flags win over AUTHPROXY_* environment variables, which win over the file."""
    env = os.environ

    def pick(flag: str, var: str) -> str | None:
        value = getattr(args, flag, None)
        return str(value) if value is not None else env.get(var)

    listen, logging_ = config.listen, config.logging
    if (host := pick("host", "AUTHPROXY_HOST")) is not None:
        listen = dataclasses.replace(listen, host=host)
    if (port := pick("port", "AUTHPROXY_PORT")) is not None:
        if not port.isdigit() or int(port) > 65535:
            raise ConfigError("AUTHPROXY_PORT", [_problem("listen.port", f"bad port {port!r}")])
        listen = dataclasses.replace(listen, port=int(port))
    for field, var, choices in (("level", "AUTHPROXY_LOG_LEVEL", ("debug", "info", "warning",
                                                                  "error")),
                                ("format", "AUTHPROXY_LOG_FORMAT", ("text", "json"))):
        value = pick(f"log_{field}", var)
        if value is not None:
            if value.lower() not in choices:
                raise ConfigError(var, [_problem(f"logging.{field}", f"must be one of "
                                                 f"{', '.join(choices)}, got {value!r}")])
            logging_ = dataclasses.replace(logging_, **{field: value.lower()})  # type: ignore
    return dataclasses.replace(config, listen=listen, logging=logging_)


def _problem(path: str, message: str) -> Problem:
    return Problem(path, None, message)


def _serve(args: argparse.Namespace, config: Config) -> int:
    # Imported here, as each command's module is: check, token and the shell completion's
    # --list (run at every TAB) go without the event loop's ~20 ms of imports.
    import asyncio

    from proxy import log
    from proxy.server import BindError, serve

    log.configure(config.logging.level, config.logging.format)

    def reload_config() -> Config:
        new = _load(args)
        log.configure(new.logging.level, new.logging.format)
        return new

    _use_uvloop()
    try:
        asyncio.run(serve(config, reload_config))
    except BindError as e:
        print(f"authproxy: {e}", file=sys.stderr)
        return EXIT_FAIL
    return EXIT_OK


def _use_uvloop() -> None:
    import asyncio

    try:
        import uvloop  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def package_file(name: str) -> Path:
    return Path(__file__).parent / name
