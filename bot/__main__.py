"""`python -m bot [run|generate|emulator|sync|check|health]`: the process entry point.

Builds `Settings` once and hands it down. Failures a user can fix (a missing
or rejected token, a bad option) end with one line on stderr and exit status 2;
a database or network the bot cannot use ends with one line and status 1;
never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from typing import NoReturn

import aiohttp
import discord
from pydantic import ValidationError
from rich.console import Console

from bot import app, cli, doctor, emulator_cli, health
from bot.logs import Redactor, level_number, setup_logging
from bot.model_registry import RegistryError, load_registry
from bot.settings import MissingSettingError, Settings
from storage.migrate import SchemaTooNewError
from storage.postgres.registry import ShardsTakenError
from storage.sqlite import StoreUnavailableError

EXIT_FAILURE = 1
EXIT_USAGE = 2
# Commands whose own output says it all: INFO lines from libraries would only bury it.
QUIET_COMMANDS = frozenset({"generate", "check", "health"})
# The whole fix in one line: which setting, which value, where, and that the bot must be restarted to serve it.
HEALTH_PORT_UNSET = (
    "error: HEALTH_PORT is not set: set HEALTH_PORT=8080 in .env (the bot serves /healthz there) and restart the bot"
)


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line naming the option, not a usage dump."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m bot", description="A Discord /imagine bot backed by RunComfy.")
    commands = parser.add_subparsers(dest="command", parser_class=_Parser)
    commands.add_parser("run", help="run the Discord bot (the default)")
    sync = commands.add_parser("sync", help="register the slash commands with Discord")
    sync.add_argument("--global", dest="global_", action="store_true", help="everywhere (once per release)")
    cli.configure_parser(commands.add_parser("generate", help="make one image from the terminal"))
    emulator_cli.configure_parser(commands.add_parser("emulator", help="serve a local RunComfy stand-in"))
    commands.add_parser("check", help="check tokens, database, permissions; print the invite URL")
    commands.add_parser("health", help="ask the running bot's health endpoint (exit 0 when healthy)")
    return parser


def _settings_error(error: ValidationError) -> str:
    first = error.errors()[0]
    name = "_".join(str(part) for part in first["loc"]).upper() or "settings"
    message = first["msg"].removeprefix("Value error, ")
    return f"error: {name}: {message}"


def _health(settings: Settings) -> int:
    if settings.health_port is None:
        print(HEALTH_PORT_UNSET, file=sys.stderr)  # noqa: T201
        return EXIT_USAGE
    return asyncio.run(health.probe(settings, sys.stdout))


def _sync(settings: Settings, global_: bool) -> int:
    if not global_ and not settings.discord_guild_ids:
        print("error: set DISCORD_GUILD_IDS to sync to test servers, or pass --global", file=sys.stderr)  # noqa: T201
        return EXIT_USAGE
    count = asyncio.run(app.sync_commands(settings, global_=global_))
    where = "globally" if global_ else f"to {len(settings.discord_guild_ids)} server(s)"
    print(f"synced {count} command(s) {where}")  # noqa: T201
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command = args.command or "run"
    stderr = Console(stderr=True)
    redact = Redactor()
    try:
        settings = Settings()
        redact = Redactor(settings.secrets())
        level = level_number(settings.log_level)
        if command in QUIET_COMMANDS and level == logging.INFO:
            level = logging.WARNING
        setup_logging(level=level, fmt=settings.log_format, secrets=settings.secrets())
        if command in ("run", "generate", "check"):
            load_registry(settings.runcomfy_model, settings.runcomfy_models_file)  # a bad models file: exit 2 now
        if command == "generate":
            return asyncio.run(cli.generate(args, settings, stderr))
        if command == "emulator":
            asyncio.run(emulator_cli.serve(args))
            return 0
        if command == "sync":
            return _sync(settings, args.global_)
        if command == "check":
            return asyncio.run(doctor.run_checks(settings, sys.stdout))
        if command == "health":
            return _health(settings)
        return app.run_bot(settings)
    except ValidationError as error:
        print(_settings_error(error), file=sys.stderr)  # noqa: T201
    except (
        MissingSettingError,
        cli.UsageError,
        health.EndpointUnavailableError,
        emulator_cli.EmulatorStartError,
        ShardsTakenError,
        RegistryError,
    ) as error:
        print(f"error: {error}", file=sys.stderr)  # noqa: T201
    except discord.LoginFailure:
        print(f"error: Discord rejected DISCORD_TOKEN: {doctor.DISCORD_LOGIN_FIX}", file=sys.stderr)  # noqa: T201
    except (StoreUnavailableError, SchemaTooNewError) as error:
        print(redact(f"error: {error}; run `python -m bot check`"), file=sys.stderr)  # noqa: T201
        return EXIT_FAILURE
    except (aiohttp.ClientError, discord.GatewayNotFound, discord.ConnectionClosed) as error:
        print(f"error: cannot reach Discord ({type(error).__name__}); run `python -m bot check`", file=sys.stderr)  # noqa: T201
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
