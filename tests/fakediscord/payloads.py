"""Wire shapes: what the fake sends for users, members, roles, channels, guilds and messages.

Each carries every field discord.py 2.x reads without a default (user.py, member.py,
role.py, channel.py, guild.py, message.py), so the client never crashes on a KeyError.
"""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING, Any

from .messages import FakeAttachment, FakeMessage
from .state import FakeChannel, FakeGuild, FakeRole, FakeUser, Overwrite

if TYPE_CHECKING:
    from .members import FakeMember

APPLICATION_COMMAND, MESSAGE_COMPONENT, MODAL_SUBMIT = 2, 3, 5


def iso(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).isoformat()


def user_payload(user: FakeUser) -> dict[str, Any]:
    return {
        "id": str(user.id),
        "username": user.username,
        "discriminator": "0",
        "global_name": user.global_name,
        "avatar": None,
        "bot": user.bot,
        "public_flags": 0,
        "avatar_decoration_data": None,
    }


def member_payload(member: FakeMember, *, with_user: bool = True, permissions: int | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "roles": [str(r.id) for r in member.roles],
        "nick": member.nick,
        "avatar": None,
        "joined_at": iso(member.joined_at),
        "premium_since": None,
        "deaf": False,
        "mute": False,
        "flags": 0,
        "pending": False,
        "communication_disabled_until": None,
    }
    if with_user:
        data["user"] = user_payload(member.user)
    if permissions is not None:
        data["permissions"] = str(permissions)
    return data


def role_payload(role: FakeRole) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": str(role.id),
        "name": role.name,
        "color": 0,
        "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
        "hoist": False,
        "icon": None,
        "unicode_emoji": None,
        "position": role.position,
        "permissions": str(role.permissions),
        "managed": role.managed_by is not None,
        "mentionable": role.mentionable,
        "flags": 0,
    }
    if role.managed_by is not None:
        data["tags"] = {"bot_id": str(role.managed_by)}
    return data


def overwrite_payload(overwrite: Overwrite) -> dict[str, Any]:
    return {
        "id": str(overwrite.target_id),
        "type": 1 if overwrite.is_member else 0,
        "allow": str(overwrite.allow),
        "deny": str(overwrite.deny),
    }


def channel_payload(channel: FakeChannel) -> dict[str, Any]:
    last = channel.messages[-1].id if channel.messages else None
    if channel.guild is None:
        recipients = [user_payload(channel.recipient)] if channel.recipient else []
        return {"id": str(channel.id), "type": 1, "last_message_id": last, "recipients": recipients, "flags": 0}
    return {
        "id": str(channel.id),
        "type": channel.type,
        "guild_id": str(channel.guild.id),
        "name": channel.name,
        "position": channel.position,
        "permission_overwrites": [overwrite_payload(o) for o in channel.overwrites],
        "parent_id": None,
        "topic": None,
        "nsfw": False,
        "last_message_id": str(last) if last else None,
        "rate_limit_per_user": 0,
        "flags": 0,
    }


def guild_payload(guild: FakeGuild, members: list[FakeMember]) -> dict[str, Any]:
    """A full GUILD_CREATE. `member_count == len(members)` marks the guild chunked for dpy."""
    return {
        "id": str(guild.id),
        "name": guild.name,
        "icon": None,
        "splash": None,
        "discovery_splash": None,
        "banner": None,
        "description": None,
        "owner_id": str(guild.owner_id),
        "afk_channel_id": None,
        "afk_timeout": 300,
        "verification_level": 0,
        "default_message_notifications": 0,
        "explicit_content_filter": 0,
        "mfa_level": 0,
        "nsfw_level": 0,
        "premium_tier": guild.premium_tier,
        "premium_subscription_count": 0,
        "premium_progress_bar_enabled": False,
        "preferred_locale": "en-US",
        "features": [],
        "system_channel_id": None,
        "system_channel_flags": 0,
        "rules_channel_id": None,
        "public_updates_channel_id": None,
        "safety_alerts_channel_id": None,
        "vanity_url_code": None,
        "max_members": 500000,
        "max_video_channel_users": 25,
        "joined_at": iso(guild.bot_member.joined_at),
        "large": False,
        "unavailable": False,
        "member_count": len(members),
        "roles": [role_payload(r) for r in guild.roles.values()],
        "emojis": [],
        "stickers": [],
        "channels": [channel_payload(c) for c in guild.channels.values() if not c.deleted],
        "members": [member_payload(m) for m in members],
        "voice_states": [],
        "presences": [],
        "threads": [],
        "stage_instances": [],
        "guild_scheduled_events": [],
        "soundboard_sounds": [],
    }


def attachment_payload(att: FakeAttachment) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": str(att.id),
        "filename": att.filename,
        "size": att.size,
        "url": att.link(),
        "proxy_url": att.link(),
        "content_type": att.content_type,
        "description": att.description,
    }
    if att.width is not None:
        data |= {"width": att.width, "height": att.height}
    return data


def emoji_payload(key: str) -> dict[str, Any]:
    """`name:id` is a custom emoji; anything else a unicode one."""
    name, _, emoji_id = key.partition(":")
    if emoji_id.isdigit():
        return {"id": emoji_id, "name": name}
    return {"id": None, "name": key}


def _interaction_fields(message: FakeMessage) -> dict[str, Any]:
    i = message.interaction
    if i is None:
        return {}
    user = user_payload(i.member.user)
    meta: dict[str, Any] = {
        "id": str(i.id),
        "type": i.type,
        "user": user,
        "authorizing_integration_owners": {"0": str(i.guild.id)} if i.guild else {"1": str(i.member.id)},
    }
    data: dict[str, Any] = {"interaction_metadata": meta, "application_id": str(i.application_id)}
    if i.type == APPLICATION_COMMAND:
        meta["name"] = i.command_name
        data["interaction"] = {"id": str(i.id), "type": i.type, "name": i.command_name, "user": user}
    if i.source_message is not None:
        meta["interacted_message_id"] = str(i.source_message.id)
    if i.original_message is not None and i.original_message is not message:
        meta["original_response_message_id"] = str(i.original_message.id)
    return data


def message_payload(message: FakeMessage, *, viewer_id: int, redact: bool = False, depth: int = 0) -> dict[str, Any]:
    """The message as `viewer_id` gets it; `redact` blanks what MESSAGE_CONTENT would hide."""
    channel = message.channel
    pings = message.pings
    kind = 0
    if message.referenced is not None:
        kind = 19
    elif message.interaction is not None and message.interaction.type == APPLICATION_COMMAND:
        kind = 20
    data: dict[str, Any] = {
        "id": str(message.id),
        "channel_id": str(channel.id),
        "author": user_payload(message.author),
        "content": "" if redact else message.content,
        "timestamp": iso(message.created_at),
        "edited_timestamp": iso(message.edited_at) if message.edited_at else None,
        "tts": False,
        "mention_everyone": pings.everyone or pings.here,
        "mentions": [user_payload(u) for uid in sorted(pings.users) if (u := _user(message, uid))],
        "mention_roles": [str(r) for r in sorted(pings.roles)],
        "attachments": [] if redact else [attachment_payload(a) for a in message.attachments],
        "embeds": [] if redact else message.embeds,
        "components": [] if redact else message.components,
        "reactions": [
            {
                "emoji": emoji_payload(key),
                "count": len(users),
                "count_details": {"burst": 0, "normal": len(users)},
                "me": viewer_id in users,
                "me_burst": False,
                "burst_colors": [],
            }
            for key, users in message.reactions.items()
            if users
        ],
        "pinned": False,
        "type": kind,
        "flags": message.flags,
    }
    if channel.guild is not None:
        data["guild_id"] = str(channel.guild.id)
    if message.webhook_id is not None:
        data["webhook_id"] = str(message.webhook_id)
    if message.message_reference is not None:
        data["message_reference"] = message.message_reference
        if message.referenced is not None and depth == 0:
            data["referenced_message"] = message_payload(message.referenced, viewer_id=viewer_id, depth=1)
    return data | _interaction_fields(message)


def _user(message: FakeMessage, user_id: int) -> FakeUser | None:
    return message.channel.fake.users.get(user_id)
