"""REST: gateway info, the bot user and application, DM channels, application commands."""

from __future__ import annotations

from typing import Any

from .errors import DiscordError, missing_access, unknown_guild, unknown_user
from .payloads import channel_payload, user_payload
from .server import Call, Reply, RestServer


async def get_gateway(call: Call) -> Reply:
    return {"url": call.fake.gateway_url}


async def get_gateway_bot(call: Call) -> Reply:
    gateway = call.fake.gateway
    return {
        "url": call.fake.gateway_url,
        "shards": call.fake.recommended_shards,
        "session_start_limit": {
            "total": gateway.identify_limit,
            "remaining": max(0, gateway.identify_limit - gateway.identify_count),
            "reset_after": 86_400_000,
            "max_concurrency": 1,
        },
    }


async def get_me(call: Call) -> Reply:
    extra = {"verified": True, "mfa_enabled": False, "flags": 0, "locale": "en-US", "email": None}
    return user_payload(call.fake.bot_user) | extra


async def leave_guild(call: Call) -> Reply:
    """The bot leaves a server: it is gone from the bot's guilds (and from READY) and the bot gets GUILD_DELETE."""
    fake = call.fake
    guild = fake.guilds.get(call.id_param("guild_id", unknown_guild))
    if guild is None:
        raise unknown_guild()
    await fake.remove_guild(guild)
    return None


async def get_user(call: Call) -> Reply:
    user = call.fake.users.get(call.id_param("user_id", unknown_user))
    if user is None:
        raise unknown_user()
    return user_payload(user)


async def get_application(call: Call) -> Reply:
    fake = call.fake
    return {
        "id": str(fake.application_id),
        "name": fake.bot_user.username,
        "icon": None,
        "description": "",
        "summary": "",
        "type": None,
        # Tests flip this with `fake.bot_public = False` (the doctor warns about public bots).
        "bot_public": fake.bot_public,
        "bot_require_code_grant": False,
        "verify_key": "0" * 64,
        "flags": fake.application_flags,
        "owner": user_payload(fake.owner),
        "team": None,
        "bot": user_payload(fake.bot_user),
        "rpc_origins": [],
        "tags": [],
        "redirect_uris": [],
        "interactions_endpoint_url": None,
        "approximate_guild_count": len(fake.guilds),
        "integration_types_config": {"0": {}},
    }


async def create_dm(call: Call) -> Reply:
    body: dict[str, Any] = await call.request.json()
    recipient = call.fake.users.get(int(body.get("recipient_id") or 0))
    if recipient is None or recipient.bot:
        raise DiscordError(400, 50033, "Invalid Recipient(s)")
    return channel_payload(call.fake.dm_channel(recipient))


def _scope(call: Call) -> int | None:
    if call.id_param("application_id") != call.fake.application_id:
        raise missing_access()
    if "guild_id" not in call.info.params:
        return None
    guild_id = call.id_param("guild_id")
    if guild_id not in call.fake.guilds:
        raise DiscordError(404, 10004, "Unknown Guild")
    return guild_id


async def get_commands(call: Call) -> Reply:
    return call.fake.commands.registered(_scope(call))


async def put_commands(call: Call) -> Reply:
    scope = _scope(call)
    return call.fake.commands.bulk_overwrite(scope, await call.request.json())


def register(server: RestServer) -> None:
    server.add("GET", "/gateway", get_gateway, auth="none")
    server.add("GET", "/gateway/bot", get_gateway_bot)
    server.add("GET", "/users/@me", get_me)
    server.add("DELETE", "/users/@me/guilds/{guild_id}", leave_guild)
    server.add("POST", "/users/@me/channels", create_dm)
    server.add("GET", "/users/{user_id}", get_user)
    server.add("GET", "/oauth2/applications/@me", get_application)
    server.add("GET", "/applications/@me", get_application)
    for template in (
        "/applications/{application_id}/commands",
        "/applications/{application_id}/guilds/{guild_id}/commands",
    ):
        server.add("GET", template, get_commands)
        server.add("PUT", template, put_commands)
