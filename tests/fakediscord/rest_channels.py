"""REST with the bot token: channels, channel messages, reactions. Permissions are computed per channel."""

from __future__ import annotations

from .compose import ComposeContext, build_version, read_body, resolve_reference
from .errors import (
    cannot_dm,
    max_reactions,
    missing_access,
    missing_permissions,
    other_author,
    unknown_channel,
    unknown_emoji,
    unknown_message,
)
from .messages import FakeMessage
from .payloads import channel_payload, message_payload
from .permissions import Perm
from .server import Call, Reply, RestServer
from .state import FakeChannel

REACTIONS_MAX = 20
NONCE_WINDOW = 5 * 60.0  # an enforced nonce counts "in the past few minutes" (docs/discord-platform.md, NONCE)


def _channel(call: Call) -> tuple[FakeChannel, int]:
    """The channel and the bot's permissions in it; 404 10003 if gone, 403 50001 if the bot can't see it."""
    channel = call.fake.channels.get(call.id_param("channel_id", unknown_channel))
    if channel is None or channel.deleted:
        raise unknown_channel()
    perms = call.fake.bot_permissions(channel)
    if not perms & Perm.VIEW_CHANNEL:
        raise missing_access()
    return channel, perms


def _require(perms: int, needed: Perm) -> None:
    if not perms & needed:
        raise missing_permissions()


def _message(call: Call, channel: FakeChannel) -> FakeMessage:
    """A message the channel routes can reach: not deleted, not someone's ephemeral reply."""
    message = call.fake.messages.get(call.id_param("message_id", unknown_message))
    if message is None or message.deleted or message.channel is not channel or message.ephemeral:
        raise unknown_message()
    return message


async def get_channel(call: Call) -> Reply:
    channel, _ = _channel(call)
    return channel_payload(channel)


async def create_message(call: Call) -> Reply:
    fake = call.fake
    channel, perms = _channel(call)
    _require(perms, Perm.SEND_MESSAGES)
    if channel.is_dm and channel.recipient is not None and not channel.recipient.dms_open:
        raise cannot_dm()
    body = await read_body(call.request)
    nonce = body.payload.get("nonce")
    if nonce is not None and body.payload.get("enforce_nonce"):
        # Discord's rule: the same author and nonce within a few minutes gets the first message back, not a new one.
        seen = fake.nonces.get((fake.bot_user.id, str(nonce)))
        if seen is not None and fake.clock.now() - seen[1] < NONCE_WINDOW and not seen[0].deleted:
            return message_payload(seen[0], viewer_id=fake.bot_user.id)
    ctx = ComposeContext(fake, channel, fake.bot_user, perms)
    reference, target = resolve_reference(ctx, body.payload)
    version = build_version(ctx, body, None, reply_to=target)
    message = fake.store_message(channel, fake.bot_user, version, reference=reference, referenced=target)
    if nonce is not None:
        fake.nonces[(fake.bot_user.id, str(nonce))] = (message, fake.clock.now())
    await fake.dispatch_message(message, "MESSAGE_CREATE")
    return message_payload(message, viewer_id=fake.bot_user.id)


async def get_message(call: Call) -> Reply:
    channel, perms = _channel(call)
    _require(perms, Perm.READ_MESSAGE_HISTORY)
    return message_payload(_message(call, channel), viewer_id=call.fake.bot_user.id)


async def edit_message(call: Call) -> Reply:
    fake = call.fake
    channel, perms = _channel(call)
    message = _message(call, channel)
    if message.author is not fake.bot_user:
        raise other_author()
    body = await read_body(call.request)
    version = build_version(ComposeContext(fake, channel, fake.bot_user, perms), body, message)
    await fake.apply_edit(message, version)
    return message_payload(message, viewer_id=fake.bot_user.id)


async def delete_message(call: Call) -> Reply:
    channel, perms = _channel(call)
    message = _message(call, channel)
    if message.author is not call.fake.bot_user:
        _require(perms, Perm.MANAGE_MESSAGES)
    await call.fake.remove_message(message)
    return None


def _emoji(call: Call) -> str:
    """Unicode emoji as given; `name:id` custom emoji must exist (this fake has none)."""
    emoji = call.param("emoji")
    if ":" in emoji or emoji.isascii():
        raise unknown_emoji()
    return emoji


async def add_reaction(call: Call) -> Reply:
    fake = call.fake
    channel, perms = _channel(call)
    message = _message(call, channel)
    _require(perms, Perm.READ_MESSAGE_HISTORY)
    emoji = _emoji(call)
    if not message.reactions.get(emoji):
        _require(perms, Perm.ADD_REACTIONS)
        if sum(1 for users in message.reactions.values() if users) >= REACTIONS_MAX:
            raise max_reactions()
    await fake.set_reaction(message, emoji, fake.bot_user.id, add=True)
    return None


async def remove_own_reaction(call: Call) -> Reply:
    channel, _ = _channel(call)
    message = _message(call, channel)
    await call.fake.set_reaction(message, _emoji(call), call.fake.bot_user.id, add=False)
    return None


async def remove_user_reaction(call: Call) -> Reply:
    channel, perms = _channel(call)
    message = _message(call, channel)
    user_id = call.id_param("member_id")
    if user_id != call.fake.bot_user.id:
        _require(perms, Perm.MANAGE_MESSAGES)
    await call.fake.set_reaction(message, _emoji(call), user_id, add=False)
    return None


def register(server: RestServer) -> None:
    server.add("GET", "/channels/{channel_id}", get_channel)
    server.add("POST", "/channels/{channel_id}/messages", create_message)
    message = "/channels/{channel_id}/messages/{message_id}"
    server.add("GET", message, get_message)
    server.add("PATCH", message, edit_message)
    server.add("DELETE", message, delete_message)
    server.add("PUT", message + "/reactions/{emoji}/@me", add_reaction)
    server.add("DELETE", message + "/reactions/{emoji}/@me", remove_own_reaction)
    server.add("DELETE", message + "/reactions/{emoji}/{member_id}", remove_user_reaction)
