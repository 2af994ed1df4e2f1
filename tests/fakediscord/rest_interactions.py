"""REST with an interaction's id or token: the callback, the original response, followups.

These routes carry no Authorization header and skip the global rate limit. The
callback must come within 3 s (else 404 10062) and only once (400 40060); every token
route answers 401 50027 once the 15 minute token has expired.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from typing import Any

from .compose import Body, ComposeContext, build_version, read_body
from .errors import (
    DiscordError,
    FormErrors,
    already_acknowledged,
    invalid_webhook_token,
    unknown_interaction,
    unknown_message,
    unknown_webhook,
)
from .interactions import FakeInteraction, ResponseRecord
from .messages import EPHEMERAL, LOADING, FakeMessage, MessageVersion
from .payloads import message_payload
from .rules import check_modal
from .server import Call, Reply, RestServer

PONG, MESSAGE, DEFERRED_MESSAGE, DEFERRED_UPDATE, UPDATE_MESSAGE, AUTOCOMPLETE, MODAL = 1, 4, 5, 6, 7, 8, 9
AUTOCOMPLETE_INTERACTION = 4  # APPLICATION_COMMAND_AUTOCOMPLETE
CHOICES_MAX = 25
KNOWN_TYPES = (PONG, MESSAGE, DEFERRED_MESSAGE, DEFERRED_UPDATE, UPDATE_MESSAGE, AUTOCOMPLETE, MODAL, 10, 12)


@contextlib.contextmanager
def _recorded(call: Call, interaction: FakeInteraction, route: str, callback_type: int | None = None) -> Iterator[None]:
    """Log the call on the interaction with the status the bot got."""
    now = call.fake.clock.now()
    try:
        yield
    except DiscordError as exc:
        interaction.responses.append(ResponseRecord(route, exc.status, now, callback_type, exc.code))
        raise
    status = 204 if route.startswith("delete") else 200
    interaction.responses.append(ResponseRecord(route, status, now, callback_type))


def _context(
    call: Call, interaction: FakeInteraction, prefix: tuple[str, ...] = (), *, later: bool = False
) -> ComposeContext:
    """The callback follows the interaction's `app_permissions`; a later edit or followup through the token is
    checked against the app's permissions in the channel at that moment (taken away meanwhile: 403 50013)."""
    fake = call.fake
    permissions = fake.bot_permissions(interaction.channel) if later else interaction.app_permissions
    return ComposeContext(fake, interaction.channel, fake.bot_user, permissions, via_interaction=True, prefix=prefix)


def _check_callback_type(interaction: FakeInteraction, kind: int, data: dict[str, Any]) -> None:
    errs = FormErrors()
    invalid = "INTERACTION_RESPONSE_TYPE_INVALID", "Interaction response type is invalid for this interaction"
    if kind not in KNOWN_TYPES:
        errs.add(("type",), "BASE_TYPE_CHOICES", f"Value must be one of {KNOWN_TYPES}.")
    elif kind == PONG or (kind == AUTOCOMPLETE) != (interaction.type == AUTOCOMPLETE_INTERACTION):
        errs.add(("type",), *invalid)  # suggestions answer an autocomplete, and an autocomplete only those
    elif kind == AUTOCOMPLETE and len(data.get("choices") or []) > CHOICES_MAX:
        errs.add(("data", "choices"), "BASE_TYPE_MAX_LENGTH", f"Must be {CHOICES_MAX} or fewer in length.")
    elif kind in (DEFERRED_UPDATE, UPDATE_MESSAGE) and not interaction.is_component:
        errs.add(("type",), *invalid)  # only component clicks and modal submits from a component
    elif kind == MODAL and interaction.type == 5:
        errs.add(("type",), *invalid)  # a modal submit cannot open another modal
    elif kind == DEFERRED_MESSAGE and int(data.get("flags") or 0) & ~EPHEMERAL:
        errs.add(("data", "flags"), "INTERACTION_RESPONSE_FLAGS_INVALID", "Only the EPHEMERAL flag may be set")
    errs.raise_if_any()


async def callback(call: Call) -> Reply:
    fake = call.fake
    interaction = fake.interactions.by_id.get(call.id_param("interaction_id", unknown_interaction))
    if interaction is None or interaction.token != call.param("interaction_token"):
        raise unknown_interaction()
    body = await read_body(call.request)
    raw_type = body.payload.get("type")
    kind = raw_type if isinstance(raw_type, int) else -1
    with _recorded(call, interaction, "callback", kind):
        if interaction.acked:
            raise already_acknowledged()
        elapsed = fake.clock.now() - interaction.created_at
        if interaction.failed or fake.clock.now() > interaction.deadline:
            fake.interactions.fail(interaction, f"This interaction failed: acknowledged after {elapsed:.2f} s")
            raise unknown_interaction()
        data = body.payload.get("data") or {}
        _check_callback_type(interaction, kind, data)
        message = await _respond(call, interaction, kind, data, body)
        fake.interactions.acknowledge(interaction, kind)
        fake.notify()
    if call.query.get("with_response", "").lower() not in ("1", "true"):
        return None
    return _callback_object(call, interaction, kind, message)


async def _respond(
    call: Call, interaction: FakeInteraction, kind: int, data: dict[str, Any], body: Body
) -> FakeMessage | None:
    fake = call.fake
    if kind == AUTOCOMPLETE:
        interaction.choices = list(data.get("choices") or [])
        return None
    if kind == MESSAGE:
        version = build_version(_context(call, interaction, ("data",)), Body(data, body.files), None)
        message = fake.store_message(interaction.channel, fake.bot_user, version, interaction=interaction)
        interaction.original_message = message
        interaction.ephemeral = message.ephemeral
        await fake.dispatch_message(message, "MESSAGE_CREATE")
        return message
    if kind == DEFERRED_MESSAGE:
        flags = LOADING | (int(data.get("flags") or 0) & EPHEMERAL)
        message = fake.store_message(
            interaction.channel, fake.bot_user, MessageVersion(flags=flags), interaction=interaction
        )
        interaction.original_message = message
        interaction.ephemeral = message.ephemeral
        await fake.dispatch_message(message, "MESSAGE_CREATE")
        return message
    source = interaction.source_message
    if kind in (DEFERRED_UPDATE, UPDATE_MESSAGE) and source is not None:
        if source.deleted:
            raise unknown_message()
        if kind == UPDATE_MESSAGE:
            version = build_version(_context(call, interaction, ("data",)), Body(data, body.files), source)
            await fake.apply_edit(source, version)
        interaction.original_message = source
        interaction.ephemeral = source.ephemeral
        return source
    if kind == MODAL:
        errs = FormErrors(("data",))
        check_modal(data, errs)
        errs.raise_if_any()
        interaction.modal = copy.deepcopy(data)
    return None


def _callback_object(
    call: Call, interaction: FakeInteraction, kind: int, message: FakeMessage | None
) -> dict[str, Any]:
    """`?with_response=true`: `{interaction: {...}, resource: {type, message?}}` (message only for 4 and 7)."""
    info: dict[str, Any] = {
        "id": str(interaction.id),
        "type": interaction.type,
        "response_message_loading": kind == DEFERRED_MESSAGE,
        "response_message_ephemeral": bool(message is not None and message.ephemeral),
    }
    if message is not None:
        info["response_message_id"] = str(message.id)
    resource: dict[str, Any] = {"type": kind}
    if kind in (MESSAGE, UPDATE_MESSAGE) and message is not None:
        resource["message"] = message_payload(message, viewer_id=call.fake.bot_user.id)
    return {"interaction": info, "resource": resource}


def _token_interaction(call: Call, route: str) -> FakeInteraction:
    fake = call.fake
    if call.id_param("webhook_id", unknown_webhook) != fake.application_id:
        raise unknown_webhook()
    interaction = fake.interactions.by_token.get(call.param("webhook_token"))
    if interaction is None:
        raise invalid_webhook_token()
    if not interaction.token_valid() or (interaction.failed and not interaction.acked):
        error = invalid_webhook_token()
        interaction.responses.append(ResponseRecord(route, error.status, fake.clock.now(), error_code=error.code))
        raise error
    if not interaction.acked:
        error = unknown_webhook()
        interaction.responses.append(ResponseRecord(route, error.status, fake.clock.now(), error_code=error.code))
        raise error
    return interaction


def _target(call: Call, interaction: FakeInteraction) -> FakeMessage:
    """`@original` or one of this interaction's followups."""
    if "message_id" not in call.info.params:
        message = interaction.original_message
    else:
        wanted = call.id_param("message_id", unknown_message)
        candidates = [interaction.original_message, *interaction.followups]
        message = next((m for m in candidates if m is not None and m.id == wanted), None)
    if message is None or message.deleted or message.channel.deleted:
        raise unknown_message()  # a deleted channel takes its messages with it
    return message


async def get_response(call: Call) -> Reply:
    interaction = _token_interaction(call, "get_message")
    with _recorded(call, interaction, "get_message"):
        message = _target(call, interaction)
    return message_payload(message, viewer_id=call.fake.bot_user.id)


async def edit_response(call: Call) -> Reply:
    interaction = _token_interaction(call, "edit_message")
    with _recorded(call, interaction, "edit_message"):
        message = _target(call, interaction)
        body = await read_body(call.request)
        await call.fake.apply_edit(message, build_version(_context(call, interaction, later=True), body, message))
    return message_payload(message, viewer_id=call.fake.bot_user.id)


async def delete_response(call: Call) -> Reply:
    interaction = _token_interaction(call, "delete_message")
    with _recorded(call, interaction, "delete_message"):
        await call.fake.remove_message(_target(call, interaction))
    return None


async def followup(call: Call) -> Reply:
    fake = call.fake
    interaction = _token_interaction(call, "followup")
    with _recorded(call, interaction, "followup"):
        body = await read_body(call.request)
        ctx = _context(call, interaction, later=True)
        original = interaction.original_message
        if original is not None and original.loading and not original.deleted:
            # A followup right after a type 5 fills the "thinking..." message (deprecated but real;
            # docs/discord-platform.md, INT).
            await fake.apply_edit(original, build_version(ctx, body, original))
            message = original
        else:
            message = fake.store_message(
                interaction.channel, fake.bot_user, build_version(ctx, body, None), interaction=interaction
            )
            await fake.dispatch_message(message, "MESSAGE_CREATE")
        if message not in interaction.followups:
            interaction.followups.append(message)
    return message_payload(message, viewer_id=fake.bot_user.id)


def register(server: RestServer) -> None:
    server.add("POST", "/interactions/{interaction_id}/{interaction_token}/callback", callback, auth="token")
    webhook = "/webhooks/{webhook_id}/{webhook_token}"
    server.add("POST", webhook, followup, auth="token")
    for suffix in ("/messages/@original", "/messages/{message_id}"):
        server.add("GET", webhook + suffix, get_response, auth="token")
        server.add("PATCH", webhook + suffix, edit_response, auth="token")
        server.add("DELETE", webhook + suffix, delete_response, auth="token")
