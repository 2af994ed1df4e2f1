"""`python -m bot [run|generate|emulator|sync|check]`: the process entry point.

Builds `Settings` once and hands it down. Failures a user can fix (a missing
token, a bad option) end with one line on stderr and exit status 2, never a
traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from typing import NoReturn

import discord
from pydantic import ValidationError
from rich.console import Console

from bot import app, cli, emulator
from bot.settings import MissingSettingError, Settings

EXIT_USAGE = 2


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
    emulator.configure_parser(commands.add_parser("emulator", help="serve a local RunComfy stand-in"))
    return parser


def _settings_error(error: ValidationError) -> str:
    first = error.errors()[0]
    name = "_".join(str(part) for part in first["loc"]).upper() or "settings"
    return f"error: {name}: {first['msg']}"


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
    try:
        settings = Settings()
        level = getattr(logging, settings.log_level, logging.INFO)
        if command == "generate" and level == logging.INFO:
            level = logging.WARNING  # the progress display says it all; INFO lines would scroll it away
        discord.utils.setup_logging(level=level, root=True)
        if command == "generate":
            return asyncio.run(cli.generate(args, settings, stderr))
        if command == "emulator":
            asyncio.run(emulator.serve(args))
            return 0
        if command == "sync":
            return _sync(settings, args.global_)
        return app.run_bot(settings)
    except ValidationError as error:
        print(_settings_error(error), file=sys.stderr)  # noqa: T201
    except (MissingSettingError, cli.UsageError) as error:
        print(f"error: {error}", file=sys.stderr)  # noqa: T201
    except KeyboardInterrupt:
        return 130
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
