"""Slash command options as a member's client builds them: typed from the synced schema, checked like the UI does."""

from __future__ import annotations

import enum
import mimetypes
from typing import TYPE_CHECKING, Any

from .messages import FakeAttachment, image_size
from .payloads import attachment_payload, member_payload, role_payload, user_payload
from .state import FakeChannel, FakeRole, FakeUser

if TYPE_CHECKING:
    from .fake import FakeDiscord
    from .state import FakeGuild

SUB_COMMAND, SUB_COMMAND_GROUP, STRING, INTEGER, BOOLEAN, USER, CHANNEL, ROLE, MENTIONABLE, NUMBER, ATTACHMENT = range(
    1, 12
)


def _guess(value: Any) -> int:
    from .members import FakeMember

    if isinstance(value, bool):
        return BOOLEAN
    if isinstance(value, int):
        return INTEGER
    if isinstance(value, float):
        return NUMBER
    if isinstance(value, FakeMember | FakeUser):
        return USER
    if isinstance(value, FakeChannel):
        return CHANNEL
    if isinstance(value, FakeRole):
        return ROLE
    if isinstance(value, tuple):
        return ATTACHMENT
    return STRING


def _check_range(name: str, value: Any, spec: dict[str, Any] | None) -> None:
    if spec is None:
        return
    choices = spec.get("choices")
    if choices and value not in [c["value"] for c in choices]:
        raise AssertionError(f"option {name!r}: {value!r} is not one of {[c['value'] for c in choices]}")
    if isinstance(value, str):
        low, high = spec.get("min_length", 0), spec.get("max_length", 6000)
        if not low <= len(value) <= high:
            raise AssertionError(f"option {name!r}: length {len(value)} outside {low}..{high}")
    elif isinstance(value, int | float):
        low, high = spec.get("min_value"), spec.get("max_value")
        if (low is not None and value < low) or (high is not None and value > high):
            raise AssertionError(f"option {name!r}: {value} outside {low}..{high}")


def _convert(
    fake: FakeDiscord, guild: FakeGuild, name: str, kind: int, value: Any, resolved: dict[str, dict[str, Any]]
) -> Any:
    from .members import FakeMember

    if isinstance(value, enum.Enum):
        value = value.value
    if kind in (USER, MENTIONABLE) and isinstance(value, FakeMember | FakeUser):
        user = value.user if isinstance(value, FakeMember) else value
        resolved.setdefault("users", {})[str(user.id)] = user_payload(user)
        if user.id in guild.members:
            member = member_payload(guild.members[user.id], with_user=False)
            resolved.setdefault("members", {})[str(user.id)] = member
        return str(user.id)
    if kind in (ROLE, MENTIONABLE) and isinstance(value, FakeRole):
        resolved.setdefault("roles", {})[str(value.id)] = role_payload(value)
        return str(value.id)
    if kind == CHANNEL and isinstance(value, FakeChannel):
        channel = {"id": str(value.id), "name": value.name, "type": value.type, "permissions": "0"}
        resolved.setdefault("channels", {})[str(value.id)] = channel
        return str(value.id)
    if kind == ATTACHMENT and isinstance(value, tuple):
        filename, data = value
        width, height = image_size(filename, bytes(data))
        attachment = FakeAttachment(
            fake.ids.next(), filename, bytes(data), mimetypes.guess_type(filename)[0], width=width, height=height
        )
        attachment.url = f"{fake.base_url}/attachments/0/{attachment.id}/{filename}"
        attachment.signer = fake.cdn.sign
        fake.attachments[attachment.id] = attachment
        resolved.setdefault("attachments", {})[str(attachment.id)] = attachment_payload(attachment)
        return str(attachment.id)
    expected: dict[int, tuple[type, ...]] = {STRING: (str,), INTEGER: (int,), NUMBER: (int, float), BOOLEAN: (bool,)}
    types = expected.get(kind)
    if types is None or not isinstance(value, types) or (kind != BOOLEAN and isinstance(value, bool)):
        raise AssertionError(f"option {name!r}: {value!r} does not fit option type {kind}")
    return value


def build_options(
    fake: FakeDiscord,
    guild: FakeGuild,
    command: dict[str, Any] | None,
    path: list[str],
    options: dict[str, Any],
) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """`options` for the interaction `data`, nested under subcommands in `path`, plus `resolved`."""
    schema: list[dict[str, Any]] | None = command.get("options") or [] if command is not None else None
    wrappers: list[dict[str, Any]] = []
    for depth, sub in enumerate(path):
        if schema is None:
            wrappers.append({"type": SUB_COMMAND if depth == len(path) - 1 else SUB_COMMAND_GROUP, "name": sub})
            continue
        spec = next((o for o in schema if o["name"] == sub and o["type"] in (SUB_COMMAND, SUB_COMMAND_GROUP)), None)
        if spec is None:
            raise AssertionError(f"no subcommand {sub!r}; the schema has {[o['name'] for o in schema]}")
        wrappers.append({"type": spec["type"], "name": sub})
        schema = spec.get("options") or []
    resolved: dict[str, dict[str, Any]] = {}
    leaf: list[dict[str, Any]] = []
    for name, value in options.items():
        spec = next((o for o in schema if o["name"] == name), None) if schema is not None else None
        if schema is not None and spec is None:
            raise AssertionError(f"no option {name!r}; the schema has {[o['name'] for o in schema]}")
        kind = spec["type"] if spec is not None else _guess(value)
        converted = _convert(fake, guild, name, kind, value, resolved)
        _check_range(name, converted, spec)
        leaf.append({"name": name, "type": kind, "value": converted})
    if schema is not None:
        missing = [o["name"] for o in schema if o.get("required") and o["name"] not in options]
        if missing:
            raise AssertionError(f"required options missing: {missing}")
    result = leaf
    for wrapper in reversed(wrappers):
        wrapper["options"] = result
        result = [wrapper]
    return result, resolved
