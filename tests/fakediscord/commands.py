"""Application commands: bulk overwrite with Discord's schema checks and the 200 creates/day limit.

The rules: docs/discord-platform.md, CMD.
"""

from __future__ import annotations

import copy
import unicodedata
from typing import Any

from .clock import FakeClock
from .errors import FormErrors, Path, max_daily_creates
from .ids import Snowflakes

CHAT_INPUT = 1
MESSAGE_COMMAND = 3  # a message context menu entry (Apps → name)
COMMANDS_MAX = 100
OPTIONS_MAX = 25
CHOICES_MAX = 25
COMMAND_CHARS_MAX = 8000
INTEGER_LIMIT = 2**53 - 1
DAY = 24 * 60 * 60
SUBCOMMAND, SUBCOMMAND_GROUP = 1, 2


def valid_chat_input_name(name: object) -> bool:
    """`^[-_'\\p{L}\\p{N}\\p{sc=Deva}\\p{sc=Thai}]{1,32}$` and lowercase (dpy `app_commands/commands.py`)."""
    if not isinstance(name, str) or not 1 <= len(name) <= 32 or name != name.lower():
        return False
    return all(ch in "-_'" or ch.isalnum() or unicodedata.category(ch) in ("Mn", "Mc") for ch in name)


class CommandRegistry:
    def __init__(self, ids: Snowflakes, clock: FakeClock, application_id: int) -> None:
        self._ids = ids
        self._clock = clock
        self._application_id = application_id
        self.scopes: dict[int | None, list[dict[str, Any]]] = {}
        self._creates: dict[int | None, list[float]] = {}
        self.daily_create_limit = 200

    def registered(self, guild_id: int | None) -> list[dict[str, Any]]:
        return copy.deepcopy(self.scopes.get(guild_id, []))

    def find(self, name: str, guild_id: int | None, kind: int = CHAT_INPUT) -> dict[str, Any] | None:
        """The synced command a member's client would offer in this guild: guild scope first, then global."""
        for scope in (guild_id, None):
            for command in self.scopes.get(scope, []):
                if command["name"] == name and command.get("type", CHAT_INPUT) == kind:
                    return command
        return None

    @property
    def synced(self) -> bool:
        return bool(self.scopes)

    def bulk_overwrite(self, guild_id: int | None, payload: object) -> list[dict[str, Any]]:
        errs = FormErrors()
        if not isinstance(payload, list):
            errs.add((), "BASE_TYPE_ARRAY", "Must be an array.")
            errs.raise_if_any()
            return []
        if sum(1 for c in payload if c.get("type", CHAT_INPUT) == CHAT_INPUT) > COMMANDS_MAX:
            errs.add((), "BASE_TYPE_MAX_LENGTH", f"Must be {COMMANDS_MAX} or fewer in length.")
        seen: set[tuple[int, str]] = set()
        for i, command in enumerate(payload):
            check_command(command, (i,), errs)
            key = (int(command.get("type", CHAT_INPUT)), str(command.get("name")))
            if key in seen:
                errs.add((i, "name"), "APPLICATION_COMMANDS_DUPLICATE_NAME", "Application command names must be unique")
            seen.add(key)
        errs.raise_if_any()

        existing = {(c["type"], c["name"]): c for c in self.scopes.get(guild_id, [])}
        new_names = [key for key in seen if key not in existing]
        now = self._clock.now()
        window = [t for t in self._creates.get(guild_id, []) if now - t < DAY]
        if len(window) + len(new_names) > self.daily_create_limit:
            self._creates[guild_id] = window
            raise max_daily_creates()
        self._creates[guild_id] = window + [now] * len(new_names)

        result: list[dict[str, Any]] = []
        for command in payload:
            kind = int(command.get("type", CHAT_INPUT))
            old = existing.get((kind, command["name"]))
            stored = {
                "id": old["id"] if old else str(self._ids.next()),
                "application_id": str(self._application_id),
                "version": str(self._ids.next()),
                "type": kind,
                "name": command["name"],
                "name_localizations": command.get("name_localizations"),
                "description": command.get("description", ""),
                "description_localizations": command.get("description_localizations"),
                "default_member_permissions": command.get("default_member_permissions"),
                "dm_permission": command.get("dm_permission", True),
                "nsfw": command.get("nsfw", False),
                "contexts": command.get("contexts"),
                "integration_types": command.get("integration_types", [0]),
                "options": copy.deepcopy(command.get("options") or []),
            }
            if guild_id is not None:
                stored["guild_id"] = str(guild_id)
            result.append(stored)
        self.scopes[guild_id] = result
        return copy.deepcopy(result)


def _chars(node: dict[str, Any]) -> int:
    total = len(str(node.get("name") or "")) + len(str(node.get("description") or ""))
    for choice in node.get("choices") or []:
        total += len(str(choice.get("name") or "")) + len(str(choice.get("value") or ""))
    return total + sum(_chars(o) for o in node.get("options") or [])


def check_command(command: dict[str, Any], at: Path, errs: FormErrors) -> None:
    kind = command.get("type", CHAT_INPUT)
    name = command.get("name")
    if kind == CHAT_INPUT:
        if not valid_chat_input_name(name):
            errs.add((*at, "name"), "APPLICATION_COMMAND_INVALID_NAME", "Command name is invalid")
        errs.length_between((*at, "description"), command.get("description"), 1, 100)
    else:
        errs.length_between((*at, "name"), name if isinstance(name, str) else None, 1, 32)
        if command.get("description"):
            errs.add((*at, "description"), "BASE_TYPE_MAX_LENGTH", "Must be 0 or fewer in length.")
    _check_options(command.get("options") or [], (*at, "options"), errs, depth=0)
    if _chars(command) > COMMAND_CHARS_MAX:
        errs.add(at, "APPLICATION_COMMAND_TOO_LARGE", f"Command exceeds maximum size ({COMMAND_CHARS_MAX})")


def _check_options(options: list[dict[str, Any]], at: Path, errs: FormErrors, depth: int) -> None:
    if len(options) > OPTIONS_MAX:
        errs.add(at, "BASE_TYPE_MAX_LENGTH", f"Must be {OPTIONS_MAX} or fewer in length.")
    optional_seen = False
    names: set[str] = set()
    for i, option in enumerate(options):
        path: Path = (*at, i)
        kind = option.get("type")
        if not isinstance(kind, int) or not 1 <= kind <= 11:
            errs.add((*path, "type"), "BASE_TYPE_CHOICES", "Value must be one of 1..11.")
            continue
        if not valid_chat_input_name(option.get("name")):
            errs.add((*path, "name"), "APPLICATION_COMMAND_INVALID_NAME", "Command name is invalid")
        if option.get("name") in names:
            errs.add((*path, "name"), "APPLICATION_COMMAND_OPTIONS_NAME_ALREADY_EXISTS", "Option names must be unique")
        names.add(str(option.get("name")))
        errs.length_between((*path, "description"), option.get("description"), 1, 100)
        if kind in (SUBCOMMAND, SUBCOMMAND_GROUP):
            if depth >= 2 or (kind == SUBCOMMAND_GROUP and depth >= 1):
                errs.add((*path, "type"), "APPLICATION_COMMAND_OPTION_TYPE_INVALID", "Sub-command nesting too deep")
            _check_options(option.get("options") or [], (*path, "options"), errs, depth + 1)
            continue
        if option.get("required"):
            if optional_seen:
                errs.add(
                    (*path, "required"),
                    "APPLICATION_COMMAND_OPTIONS_REQUIRED_INVALID",
                    "Required options must be placed before non-required options",
                )
        else:
            optional_seen = True
        choices = option.get("choices") or []
        if len(choices) > CHOICES_MAX:
            errs.add((*path, "choices"), "BASE_TYPE_MAX_LENGTH", f"Must be {CHOICES_MAX} or fewer in length.")
        for j, choice in enumerate(choices):
            errs.length_between((*path, "choices", j, "name"), choice.get("name"), 1, 100)
            if isinstance(choice.get("value"), str):
                errs.max_length((*path, "choices", j, "value"), choice["value"], 100)
        for key, low in (("min_length", 0), ("max_length", 1)):
            value = option.get(key)
            if value is not None and not (isinstance(value, int) and low <= value <= 6000):
                errs.add((*path, key), "NUMBER_TYPE_MAX", f"int value should be between {low} and 6000.")
        for key in ("min_value", "max_value"):
            value = option.get(key)
            if value is not None and not -INTEGER_LIMIT <= value <= INTEGER_LIMIT:
                errs.add((*path, key), "NUMBER_TYPE_MAX", f"Value should be within +/-{INTEGER_LIMIT}.")
