"""`switchboard users …` and `switchboard keys …` (contract §1): people and API keys in APP_DATABASE_URL.

Each command migrates the schema if needed, makes its one change in one transaction and prints one line
(or a table). Errors are one line on stderr and exit 2, with nothing changed. A running App server looks
users, sessions and keys up on every request, so a change is in effect at once.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, NoReturn, TypeVar

if TYPE_CHECKING:
    from switchboard.tickets.ui.accounts import AccountStore

# The database and Argon2 imports wait for `users`/`keys` to run: the parser is built for every command.

EXIT_INVALID = 2
_ACTOR = "cli"
_T = TypeVar("_T")


class _OneLineErrors(argparse.ArgumentParser):
    """Usage mistakes are one line on stderr and exit 2, like every other error of these commands."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_INVALID, f"{self.prog}: {message}\n")


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    users = sub.add_parser("users", help="people who sign in to the dashboard (APP_DATABASE_URL)")
    users.error = _OneLineErrors.error.__get__(users)  # type: ignore[method-assign]
    users_sub = users.add_subparsers(dest="users_command", required=True, parser_class=_OneLineErrors,
                                     metavar="add|remove|list")
    add = users_sub.add_parser("add", help="add a user; the password is read from standard input")
    add.add_argument("--email", required=True)
    who = add.add_mutually_exclusive_group(required=True)
    who.add_argument("--tenant", help="the tenant (bot profile key) this user sees")
    who.add_argument("--operator", action="store_true", help="sees every tenant")
    add.add_argument("--role", choices=["viewer", "developer", "admin"])
    remove = users_sub.add_parser("remove", help="remove a user and end their sessions")
    remove.add_argument("email")
    users_sub.add_parser("list", help="list users")

    keys = sub.add_parser("keys", help="tenant API keys for /api/* (APP_DATABASE_URL)")
    keys.error = _OneLineErrors.error.__get__(keys)  # type: ignore[method-assign]
    keys_sub = keys.add_subparsers(dest="keys_command", required=True, parser_class=_OneLineErrors,
                                   metavar="create|revoke|list")
    create = keys_sub.add_parser("create", help="create a key; it is printed once, only its hash is kept")
    create.add_argument("--tenant", required=True)
    create.add_argument("--role", required=True, choices=["viewer", "developer", "admin"])
    create.add_argument("--name", default=None)
    revoke = keys_sub.add_parser("revoke", help="revoke a key by its id")
    revoke.add_argument("id")
    keys_sub.add_parser("list", help="list keys (never the keys themselves)")


def _read_password() -> str:
    if sys.stdin.isatty():
        return getpass.getpass("Password: ")
    return sys.stdin.read().rstrip("\r\n")


async def _with_store(database_url: str, work: Callable[[AccountStore], Awaitable[_T]]) -> _T:
    from switchboard.config import ensure_sqlite_folder
    from switchboard.tickets.database import create_engine, create_session_factory, run_migrations
    from switchboard.tickets.ui.accounts import AccountStore

    engine = create_engine(database_url)
    try:
        ensure_sqlite_folder(database_url)
        await run_migrations(engine)
        async with create_session_factory(engine)() as session:
            return await work(AccountStore(session))
    finally:
        await engine.dispose()


def _when(at: datetime | None) -> str:
    return at.strftime("%Y-%m-%d %H:%M UTC") if at is not None else "-"


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)


async def _run_users(args: argparse.Namespace, store: AccountStore) -> str:
    from switchboard.tickets.ui.accounts import check_password
    from switchboard.tickets.ui.auth import hash_password
    from switchboard.tickets.ui.errors import AccountError

    now = datetime.now(UTC)
    if args.users_command == "add":
        if args.operator and args.role:
            raise AccountError("--role does not apply to an operator (who sees every tenant)")
        if not args.operator and not args.role:
            raise AccountError("--role viewer|developer|admin is required with --tenant")
        password = _read_password()
        check_password(password)
        password_hash = await asyncio.to_thread(hash_password, password)
        tenant = None if args.operator else args.tenant
        user = await store.add_user(email=args.email, tenant=tenant, role=args.role or "", password_hash=password_hash,
                                    now=now, actor=_ACTOR)
        where = "every tenant" if user.tenant is None else f"tenant {user.tenant}"
        return f"added user {user.email} ({where}, role {user.role})"
    if args.users_command == "remove":
        user = await store.remove_user(args.email, now=now, actor=_ACTOR)
        return f"removed user {user.email}"
    users = await store.list_users()
    rows = [["EMAIL", "TENANT", "ROLE", "CREATED"]]
    rows += [[u.email, u.tenant or "(every tenant)", u.role, _when(u.created_at)] for u in users]
    return _table(rows)


async def _run_keys(args: argparse.Namespace, store: AccountStore) -> str:
    from switchboard.tickets.ui.errors import AccountError

    now = datetime.now(UTC)
    if args.keys_command == "create":
        created = await store.create_key(tenant=args.tenant, role=args.role, name=args.name, now=now, actor=_ACTOR)
        print(
            f"API key {created.key.id} for tenant {created.key.tenant} (role {created.key.role}); "
            "it is shown this once, only its hash is kept",
            file=sys.stderr,
        )
        return created.secret
    if args.keys_command == "revoke":
        try:
            key_id = int(args.id)
        except ValueError:
            raise AccountError(f"API key id {args.id!r} is not a number") from None
        key = await store.revoke_key(key_id, now=now, actor=_ACTOR)
        return f"revoked API key {key.id} (tenant {key.tenant})"
    keys = await store.list_keys()
    rows = [["ID", "TENANT", "ROLE", "NAME", "PREFIX", "CREATED", "REVOKED"]]
    rows += [[str(k.id), k.tenant, k.role, k.name or "-", k.key_prefix + "…", _when(k.created_at), _when(k.revoked_at)]
             for k in keys]
    return _table(rows)


def accounts_command(args: argparse.Namespace) -> int:
    """Run `users …` or `keys …`; returns the exit code (0, or 2 with nothing changed)."""
    from sqlalchemy.exc import SQLAlchemyError

    from switchboard.config import AppSettings, load_settings
    from switchboard.tickets.ui.errors import AccountError

    settings = load_settings(AppSettings)
    runner = _run_users if args.command == "users" else _run_keys
    try:
        output = asyncio.run(_with_store(settings.app_database_url, lambda store: runner(args, store)))
    except AccountError as exc:
        print(f"switchboard: {exc}; nothing was changed", file=sys.stderr)
        return EXIT_INVALID
    except (SQLAlchemyError, OSError) as exc:
        print(f"switchboard: database error ({type(exc).__name__}); nothing was changed", file=sys.stderr)
        return EXIT_INVALID
    print(output)
    return 0
