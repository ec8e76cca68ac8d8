"""The `switchboard` console script: serve, tenants load, call, demo, users, keys (contract §1).

Thin: parses arguments and hands off to the service packages.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

DEFAULT_PORTS = {"voice": 8080, "ai": 8081, "app": 8082, "engine": 8083}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="switchboard", description="AI voice agent for phone calls.")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run a service (production style, uvicorn)")
    serve.add_argument("service", choices=["voice", "ai", "app", "engine", "all"])
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=None)

    tenants = sub.add_parser("tenants", help="manage tenants (bot profiles)")
    tenants_sub = tenants.add_subparsers(dest="tenants_command", required=True)
    load = tenants_sub.add_parser("load", help="load or update tenants from a YAML file")
    load.add_argument("file")

    call = sub.add_parser("call", help="simulate a caller against a running voice server, as Twilio would")
    call.add_argument("--voice-url", default="http://127.0.0.1:8080", help="the voice server's base URL")
    call.add_argument("--to", default="+15551230001", help="the number dialled (routes to a tenant)")
    call.add_argument("--from", dest="from_number", default="+15557654321", help="the caller's number")
    call.add_argument("--say", action=ScriptStep, default=[],
                      help='a sentence to speak (repeatable, in order with --keys); "keys:4512#" presses keys')
    call.add_argument("--keys", action=ScriptStep, default=[],
                      help='keys to press on the keypad, e.g. "4512#" (repeatable, in order with --say)')
    call.add_argument("--wav", default=None, help="a WAV file to stream instead of sentences")
    call.add_argument("--barge-in", action="store_true", help="interrupt the agent's first answer")
    call.add_argument("--record", default=None, help="write the call as a two-channel WAV here")
    call.add_argument("--timeout-s", type=float, default=120.0)

    sub.add_parser("demo", help="start everything on embedded defaults and place a simulated call")

    migrate = sub.add_parser("migrate", help="bring the AI and App databases to the newest schema, then exit")
    migrate.add_argument("targets", nargs="*", metavar="ai|app|all", help="which databases (default: all)")

    from switchboard.tickets.ui.commands import add_parsers as add_account_parsers

    add_account_parsers(sub)
    return parser


class ScriptStep(argparse.Action):
    """`--say`/`--keys`: kept in their own list and, in command-line order, in `script` as (kind, value)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        setattr(namespace, self.dest, [*(getattr(namespace, self.dest, None) or []), values])
        namespace.script = [*(getattr(namespace, "script", None) or []), (self.dest, values)]


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from switchboard.config import SettingsError

    try:
        if args.command == "serve":
            from switchboard.serving import serve

            port = args.port if args.port is not None else DEFAULT_PORTS.get(args.service, 8080)
            return serve(args.service, host=args.host, port=port)
        if args.command == "tenants":
            from switchboard.knowledge.commands import load_tenants_command

            return load_tenants_command(args.file)
        if args.command == "call":
            from switchboard.simulator.command import call_command

            return call_command(args)
        if args.command in {"users", "keys"}:
            from switchboard.tickets.ui.commands import accounts_command

            return accounts_command(args)
        if args.command == "demo":
            from switchboard.demo import demo_command

            return demo_command()
        if args.command == "migrate":
            from switchboard.migrations_command import migrate_command

            if not set(args.targets) <= {"ai", "app", "all"}:
                _parser().error(f"migrate: unknown database {args.targets}; choose from ai, app, all")
            return migrate_command(args.targets)
    except SettingsError as exc:
        print(f"switchboard: {exc}", file=sys.stderr)
        return 2
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
