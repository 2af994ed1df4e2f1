"""Permission bits and Discord's channel permission algorithm (docs/discord-platform.md, PERM).

Order: @everyone role, then the member's roles (OR), administrator short-circuits; then
the channel's @everyone overwrite, the member's role overwrites (deny then allow,
aggregated), the member overwrite. No VIEW_CHANNEL means no permissions at all; no
SEND_MESSAGES also removes the permissions that only make sense when sending.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from typing import Protocol


class Perm(enum.IntFlag):
    CREATE_INSTANT_INVITE = 1 << 0
    KICK_MEMBERS = 1 << 1
    BAN_MEMBERS = 1 << 2
    ADMINISTRATOR = 1 << 3
    MANAGE_CHANNELS = 1 << 4
    MANAGE_GUILD = 1 << 5
    ADD_REACTIONS = 1 << 6
    VIEW_AUDIT_LOG = 1 << 7
    VIEW_CHANNEL = 1 << 10
    SEND_MESSAGES = 1 << 11
    SEND_TTS_MESSAGES = 1 << 12
    MANAGE_MESSAGES = 1 << 13
    EMBED_LINKS = 1 << 14
    ATTACH_FILES = 1 << 15
    READ_MESSAGE_HISTORY = 1 << 16
    MENTION_EVERYONE = 1 << 17
    USE_EXTERNAL_EMOJIS = 1 << 18
    CONNECT = 1 << 20
    SPEAK = 1 << 21
    CHANGE_NICKNAME = 1 << 26
    MANAGE_ROLES = 1 << 28
    USE_APPLICATION_COMMANDS = 1 << 31
    SEND_MESSAGES_IN_THREADS = 1 << 38


ALL_PERMISSIONS = (1 << 51) - 1

# What a new server's @everyone can do, minus MENTION_EVERYONE so that tests must grant it.
DEFAULT_EVERYONE = int(
    Perm.CREATE_INSTANT_INVITE
    | Perm.ADD_REACTIONS
    | Perm.VIEW_CHANNEL
    | Perm.SEND_MESSAGES
    | Perm.EMBED_LINKS
    | Perm.ATTACH_FILES
    | Perm.READ_MESSAGE_HISTORY
    | Perm.USE_EXTERNAL_EMOJIS
    | Perm.CONNECT
    | Perm.SPEAK
    | Perm.CHANGE_NICKNAME
    | Perm.USE_APPLICATION_COMMANDS
    | Perm.SEND_MESSAGES_IN_THREADS
)

# The invite link's `permissions=117824` (docs/discord-platform.md, PERM).
BOT_INVITE = int(
    Perm.VIEW_CHANNEL
    | Perm.SEND_MESSAGES
    | Perm.EMBED_LINKS
    | Perm.ATTACH_FILES
    | Perm.READ_MESSAGE_HISTORY
    | Perm.ADD_REACTIONS
)
assert BOT_INVITE == 117824

# A DM has no overwrites; everything a message needs is allowed, and the member may run the app's
# commands there (Application Commands, application command object: global commands are visible in DMs
# with the app by default).
DM_PERMISSIONS = int(
    Perm.VIEW_CHANNEL
    | Perm.USE_APPLICATION_COMMANDS
    | Perm.SEND_MESSAGES
    | Perm.EMBED_LINKS
    | Perm.ATTACH_FILES
    | Perm.READ_MESSAGE_HISTORY
    | Perm.ADD_REACTIONS
    | Perm.USE_EXTERNAL_EMOJIS
)

_NEED_SEND = int(Perm.SEND_TTS_MESSAGES | Perm.MENTION_EVERYONE | Perm.EMBED_LINKS | Perm.ATTACH_FILES)


def as_bits(value: object) -> int:
    """Accept an int, a `Perm`, or a `discord.Permissions` (anything with `.value`)."""
    bits = getattr(value, "value", value)
    if not isinstance(bits, int):
        raise TypeError(f"not a permission value: {value!r}")
    return bits


class OverwriteLike(Protocol):
    @property
    def target_id(self) -> int: ...
    @property
    def is_member(self) -> bool: ...

    allow: int
    deny: int


def base_permissions(everyone: int, role_bits: Iterable[int], *, is_owner: bool) -> int:
    if is_owner:
        return ALL_PERMISSIONS
    bits = everyone
    for role in role_bits:
        bits |= role
    if bits & Perm.ADMINISTRATOR:
        return ALL_PERMISSIONS
    return bits


def channel_permissions(
    base: int,
    overwrites: Iterable[OverwriteLike],
    *,
    everyone_id: int,
    role_ids: set[int],
    member_id: int,
) -> int:
    if base & Perm.ADMINISTRATOR:
        return ALL_PERMISSIONS
    overwrites = list(overwrites)
    bits = base
    for ow in overwrites:
        if not ow.is_member and ow.target_id == everyone_id:
            bits = (bits & ~ow.deny) | ow.allow
    allow = deny = 0
    for ow in overwrites:
        if not ow.is_member and ow.target_id in role_ids:
            allow |= ow.allow
            deny |= ow.deny
    bits = (bits & ~deny) | allow
    for ow in overwrites:
        if ow.is_member and ow.target_id == member_id:
            bits = (bits & ~ow.deny) | ow.allow
    if not bits & Perm.VIEW_CHANNEL:
        return 0
    if not bits & Perm.SEND_MESSAGES:
        bits &= ~_NEED_SEND
    return bits


def missing(bits: int, needed: int) -> list[str]:
    """Names of the needed permissions `bits` lacks (for error summaries)."""
    return [p.name or str(int(p)) for p in Perm if needed & p and not bits & p]
