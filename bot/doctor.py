"""`python -m bot check`: what is wrong, and what to do about it, one line each.

Checks, in the order a newcomer meets them: the Discord token (who the bot
is, its application, and whether a public application is left without an
allow-list or a spending cap), whether `/imagine` is registered, every server
the bot is in and the permissions it lacks there, the RunComfy token and model
(with its price), the database (read-only: schema version, writable, room
left, jobs the CLI left behind), and finally the invite URL with the exact
permission integer and scopes. Each line starts with ✓ or ✗; exit status 0
only when every line is ✓.

The Discord part logs in over REST and opens one gateway session (guilds and
their permissions only arrive there), so it works while the bot is running.
When a host cannot be reached at all, the line says so and why, and that the
token was not checked; it never names an exception class. RunComfy and the
database are checked in `bot.doctor_backends`. Secrets are never printed:
every line passes through the same redaction as the logs, and only the scheme
and host of a configured URL are shown.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, TextIO

import aiohttp
import discord
from discord import app_commands

from bot.app import INVITE_PERMISSIONS, INVITE_SCOPES, intents, invite_url, point_discord_at, without_voice
from bot.doctor_backends import NETWORK_FIX, check_database, check_runcomfy, reach, shown_url
from bot.doctor_postgres import check_postgres
from bot.logs import Redactor
from bot.settings import MissingSettingError, Settings

OK = "✓"
FAIL = "✗"
DISCORD_LOGIN_FIX = (
    "open https://discord.com/developers/applications → your app → Bot → Reset Token, put it in DISCORD_TOKEN"
)
# Discord's own names for the permissions, as its settings screens show them.
PERMISSION_LABELS = {
    "view_channel": "View Channels",
    "send_messages": "Send Messages",
    "embed_links": "Embed Links",
    "attach_files": "Attach Files",
    "read_message_history": "Read Message History",
    "add_reactions": "Add Reactions",
}
COMMAND = "imagine"
GUILD_LINES = 25  # past this many servers, only those with problems get a line
CHANNELS_SHOWN = 5
CONNECT_TIMEOUT = 30.0
PUBLIC_FIX = (
    "set DISCORD_ALLOWED_GUILD_IDS to your server ids or a BUDGET_* cap, or switch off Public Bot "
    "(Developer Portal → your app → Bot → Public Bot)"
)


class Report:
    """Writes the ✓/✗ lines (redacted) and counts the failures."""

    def __init__(self, out: TextIO, redact: Redactor) -> None:
        self.out = out
        self.redact = redact
        self.passed = 0
        self.failed = 0

    def ok(self, text: str) -> None:
        self.passed += 1
        self._write(f"{OK} {text}")

    def fail(self, text: str, fix: str) -> None:
        self.failed += 1
        self._write(f"{FAIL} {text}\n    → {fix}")

    def note(self, text: str) -> None:
        self._write(f"    {text}")

    def _write(self, line: str) -> None:
        self.out.write(self.redact(line) + "\n")
        self.out.flush()


def permission_names(permissions: discord.Permissions) -> str:
    return ", ".join(label for flag, label in PERMISSION_LABELS.items() if getattr(permissions, flag))


def missing_labels(permissions: discord.Permissions) -> list[str]:
    return [label for flag, label in PERMISSION_LABELS.items() if not getattr(permissions, flag)]


async def run_checks(settings: Settings, out: TextIO, *, ready_timeout: float = 2.0) -> int:
    """Run every check, print one line each, return the exit status (0: all passed)."""
    report = Report(out, Redactor(settings.secrets()))
    report.note("imagine-bot check: settings from the environment and .env")
    application_id = await check_discord(settings, report, ready_timeout=ready_timeout)
    await check_runcomfy(settings, report)
    if settings.postgres_url is not None:
        await check_postgres(settings.postgres_url, settings, report)
    else:
        await check_database(settings.database_path, report)
    if isinstance(application_id, int):
        report.ok(
            f"Invite URL (scopes {' '.join(INVITE_SCOPES)}; permissions={INVITE_PERMISSIONS.value} = "
            f"{permission_names(INVITE_PERMISSIONS)}): {invite_url(application_id)}"
        )
    elif application_id is UNREACHABLE:
        report.fail(
            "Invite URL: needs the application id, which Discord sends once it can be reached",
            "fix the Discord line above first",
        )
    else:
        report.fail("Invite URL: needs the application id, which comes with a working token", DISCORD_LOGIN_FIX)
    if report.failed:
        report.note(f"{report.failed} of {report.passed + report.failed} checks failed: fix the ✗ lines, run again.")
        return 1
    report.note(f"All {report.passed} checks passed.")
    return 0


# -- Discord ------------------------------------------------------------------


UNREACHABLE = "unreachable"


async def check_discord(settings: Settings, report: Report, *, ready_timeout: float) -> int | str | None:
    """Token, commands, servers and permissions; returns the application id when the token works,
    UNREACHABLE when Discord could not be reached (the token may well be fine), else None."""
    try:
        token = settings.require("DISCORD_TOKEN")
    except MissingSettingError as error:
        report.fail(f"Discord token: {error}", DISCORD_LOGIN_FIX)
        return None
    point_discord_at(settings)
    without_voice()
    options: dict[str, Any] = {"intents": intents(), "guild_ready_timeout": ready_timeout}
    client: discord.Client
    if settings.shard_count is not None:
        client = discord.AutoShardedClient(shard_count=settings.shard_count, **options)
    else:
        client = discord.Client(**options)
    async with client:
        try:
            await client.login(token.get_secret_value())
        except discord.LoginFailure:
            report.fail("Discord token: Discord rejected DISCORD_TOKEN (401 Unauthorized)", DISCORD_LOGIN_FIX)
            return None
        except discord.HTTPException as error:
            where = shown_url(settings.discord_api_base_url)
            report.fail(
                f"Discord: {where} answered HTTP {error.status} at login; the token was not checked",
                "try again in a minute; if it persists, see https://discordstatus.com",
            )
            return UNREACHABLE
        except (aiohttp.ClientError, TimeoutError):
            where = shown_url(settings.discord_api_base_url)
            report.fail(
                f"Discord: could not reach {where}: {await reach(settings.discord_api_base_url)}; "
                "the token was not checked",
                f"{NETWORK_FIX} (and DISCORD_API_BASE_URL if you changed it)",
            )
            return UNREACHABLE
        user = client.user
        application_id = client.application_id
        if user is None or application_id is None:  # login sets both; a broken answer would not
            report.fail("Discord token: Discord's answer named no bot user or application", DISCORD_LOGIN_FIX)
            return None
        report.ok(f"Discord token: logged in as {user} (id {user.id}), application {application_id}")
        check_public(client.application, settings, report)
        await check_commands(client, settings, report)
        await check_guilds(client, report)
    return application_id


def check_public(application: discord.AppInfo | None, settings: Settings, report: Report) -> None:
    """A public application can be added to any server; with no allow-list and no budget, any server spends."""
    if application is None:
        return
    if not application.bot_public:
        report.ok("Discord application: private (only its owner can add the bot to a server)")
    elif settings.discord_allowed_guild_ids:
        count = len(settings.discord_allowed_guild_ids)
        report.ok(
            f"Discord application: public; the bot serves only the {count} server(s) in DISCORD_ALLOWED_GUILD_IDS"
        )
    elif settings.has_budget:
        report.ok(f"Discord application: public; spending is capped ({_budget(settings)}, all servers together)")
    else:
        report.fail(
            "Discord application: public (anyone can add the bot to their server) and neither "
            "DISCORD_ALLOWED_GUILD_IDS nor a BUDGET_* cap is set, so any server can spend your RunComfy credit",
            PUBLIC_FIX,
        )


def _budget(settings: Settings) -> str:
    caps = [
        (settings.budget_images_per_day, f"{settings.budget_images_per_day} images a day"),
        (settings.budget_usd_per_day, f"${settings.budget_usd_per_day:g} a day"),
        (settings.budget_usd_per_month, f"${settings.budget_usd_per_month:g} a month"),
    ]
    return ", ".join(text for cap, text in caps if cap > 0)


async def check_commands(client: discord.Client, settings: Settings, report: Report) -> None:
    tree = app_commands.CommandTree(client)
    fix_sync = "run `python -m bot sync --global` once per release (or set DISCORD_GUILD_IDS to your test server)"
    try:
        global_names = {command.name for command in await tree.fetch_commands()}
    except discord.HTTPException as error:
        report.fail(f"Slash commands: cannot list them ({error.status})", fix_sync)
        return
    if COMMAND in global_names:
        report.ok(f"Slash commands: /{COMMAND} is registered globally")
        return
    if not settings.discord_guild_ids:
        report.fail(f"Slash commands: /{COMMAND} is not registered, so nobody can see it", fix_sync)
        return
    unknown: list[int] = []
    for guild_id in settings.discord_guild_ids:
        try:
            await tree.fetch_commands(guild=discord.Object(guild_id))
        except discord.HTTPException:
            unknown.append(guild_id)
    if unknown:
        report.fail(
            f"Slash commands: DISCORD_GUILD_IDS lists server(s) the bot is not in: {', '.join(map(str, unknown))}",
            "invite the bot there with the URL below, or remove those ids",
        )
        return
    report.ok(
        f"Slash commands: /{COMMAND} is synced to the {len(settings.discord_guild_ids)} server(s) "
        "in DISCORD_GUILD_IDS each time the bot starts"
    )


async def check_guilds(client: discord.Client, report: Report) -> None:
    """Connect to the gateway once, list the servers and what the bot may not do in them."""
    connecting = asyncio.create_task(client.connect(reconnect=False), name="doctor-gateway")
    ready = asyncio.create_task(client.wait_until_ready(), name="doctor-ready")
    try:
        done, _ = await asyncio.wait({connecting, ready}, timeout=CONNECT_TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
        if ready not in done:
            error = connecting.exception() if connecting in done else None
            reason = _gateway_failure(error)
            report.fail(f"Gateway: {reason}", "check the network; if it persists, see https://discordstatus.com")
            return
        guilds = sorted(client.guilds, key=lambda guild: guild.name.casefold())
        if not guilds:
            report.fail("Servers: the bot is in no server yet", "open the invite URL below and add it to your server")
            return
        report.ok(f"Gateway: connected; the bot is in {len(guilds)} server(s)")
        quiet = len(guilds) > GUILD_LINES
        hidden_ok = 0
        for guild in guilds:
            if not check_guild(guild, report, quiet=quiet):
                hidden_ok += 1
        if hidden_ok:
            report.ok(f"{hidden_ok} more server(s): every permission the bot needs")
    finally:
        for task in (ready, connecting):
            task.cancel()
        await client.close()
        for task in (ready, connecting):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


def _gateway_failure(error: BaseException | None) -> str:
    if isinstance(error, discord.PrivilegedIntentsRequired):
        return "Discord refused the intents (the bot needs none of the privileged ones)"
    if isinstance(error, discord.ConnectionClosed):
        return f"Discord closed the connection (code {error.code})"
    if error is not None:
        return "could not connect (the network, a firewall, or Discord itself)"
    return f"not ready within {CONNECT_TIMEOUT:g} s"


def check_guild(guild: discord.Guild, report: Report, *, quiet: bool) -> bool:
    """One line for the server; returns False when it passed and `quiet` kept it off the page."""
    me = guild.me
    if me is None:
        report.fail(f"{guild.name} (id {guild.id}): the bot's own member is missing", "run the check again")
        return True
    server_wide = missing_labels(me.guild_permissions)
    problems: dict[str, list[str]] = {}
    visible = hidden = 0
    for channel in guild.text_channels:
        permissions = channel.permissions_for(me)
        if not permissions.view_channel:
            hidden += 1  # hidden on purpose, most likely: not a failure
            continue
        visible += 1
        for label in missing_labels(permissions):
            if label not in server_wide:
                problems.setdefault(label, []).append(f"#{channel.name}")
    name = f"{guild.name} (id {guild.id})"
    if not server_wide and not problems:
        if quiet:
            return False
        hidden_note = f"; {hidden} channel(s) hidden from it" if hidden else ""
        report.ok(f"{name}: every permission the bot needs, in {visible} channel(s){hidden_note}")
        return True
    parts = []
    if server_wide:
        parts.append(f"server-wide: {', '.join(server_wide)}")
    for label, channels in problems.items():
        more = f" and {len(channels) - CHANNELS_SHOWN} more" if len(channels) > CHANNELS_SHOWN else ""
        parts.append(f"{label} in {', '.join(channels[:CHANNELS_SHOWN])}{more}")
    fix = (
        "give the bot's role those permissions (Server Settings → Roles, or the channel's Permissions), "
        "or re-invite it with the URL below"
    )
    report.fail(f"{name}: missing {'; '.join(parts)}", fix)
    return True
