"""Guilds, channels, roles, users: the server-side truth the fake serves and the tests read."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .permissions import (
    BOT_INVITE,
    DEFAULT_EVERYONE,
    DM_PERMISSIONS,
    as_bits,
    base_permissions,
    channel_permissions,
)

if TYPE_CHECKING:
    from .fake import FakeDiscord
    from .members import FakeMember
    from .messages import FakeMessage

MIB = 1024 * 1024
# dpy `guild.py` _PREMIUM_GUILD_LIMITS; Discord's per-file limit since 2025-01-16.
TIER_UPLOAD_LIMITS = {0: 10 * MIB, 1: 10 * MIB, 2: 50 * MIB, 3: 100 * MIB}
DM_UPLOAD_LIMIT = 10 * MIB

TEXT_CHANNEL = 0
DM_CHANNEL = 1


@dataclass(eq=False)
class FakeUser:
    id: int
    username: str
    bot: bool = False
    global_name: str | None = None
    dms_open: bool = True  # False: the bot's DMs answer 403 50007

    @property
    def mention(self) -> str:
        return f"<@{self.id}>"


@dataclass(eq=False)
class FakeRole:
    id: int
    guild: FakeGuild
    name: str
    permissions: int
    position: int = 0
    mentionable: bool = False
    managed_by: int | None = None  # the bot user id for a bot's integration role

    @property
    def mention(self) -> str:
        return f"<@&{self.id}>"

    @property
    def is_everyone(self) -> bool:
        return self.id == self.guild.id


@dataclass(eq=False)
class Overwrite:
    """A channel permission overwrite for a role (or @everyone) or a member."""

    target: FakeRole | FakeMember
    allow: int = 0
    deny: int = 0

    def __post_init__(self) -> None:
        self.allow = as_bits(self.allow)
        self.deny = as_bits(self.deny)

    @property
    def target_id(self) -> int:
        return self.target.id

    @property
    def is_member(self) -> bool:
        return not isinstance(self.target, FakeRole)


class FakeChannel:
    def __init__(
        self,
        fake: FakeDiscord,
        channel_id: int,
        name: str,
        *,
        guild: FakeGuild | None,
        kind: int = TEXT_CHANNEL,
        position: int = 0,
        recipient: FakeUser | None = None,
    ) -> None:
        self._fake = fake
        self.id = channel_id
        self.name = name
        self.guild = guild
        self.type = kind
        self.position = position
        self.recipient = recipient
        self.overwrites: list[Overwrite] = []
        self.messages: list[FakeMessage] = []
        self.deleted = False

    def __repr__(self) -> str:
        return f"<FakeChannel #{self.name} id={self.id}>"

    @property
    def fake(self) -> FakeDiscord:
        return self._fake

    @property
    def is_dm(self) -> bool:
        return self.type == DM_CHANNEL

    @property
    def mention(self) -> str:
        return f"<#{self.id}>"

    @property
    def upload_limit(self) -> int:
        return self.guild.upload_limit if self.guild is not None else DM_UPLOAD_LIMIT

    def set_overwrite(self, target: FakeRole | FakeMember, *, allow: object = 0, deny: object = 0) -> Overwrite:
        """Replace the overwrite for `target`; `await fake.update_channel(channel)` tells the bot."""
        self.overwrites = [ow for ow in self.overwrites if ow.target is not target]
        overwrite = Overwrite(target, as_bits(allow), as_bits(deny))
        self.overwrites.append(overwrite)
        self._fake.notify()
        return overwrite

    def permissions_for(self, member: FakeMember) -> int:
        if self.guild is None:
            return DM_PERMISSIONS
        return self.guild.permissions_for(member, self)

    def visible_messages(self) -> list[FakeMessage]:
        """What any member sees: no deleted messages, no one's ephemeral replies."""
        return [m for m in self.messages if not m.deleted and not m.ephemeral]


class FakeGuild:
    def __init__(
        self, fake: FakeDiscord, guild_id: int, name: str, *, premium_tier: int, upload_limit: int | None
    ) -> None:
        self._fake = fake
        self.id = guild_id
        self.name = name
        self.premium_tier = premium_tier
        self.upload_limit_override = upload_limit
        self.roles: dict[int, FakeRole] = {}
        self.channels: dict[int, FakeChannel] = {}
        self.members: dict[int, FakeMember] = {}
        self.owner_id = 0
        self.roles[guild_id] = FakeRole(guild_id, self, "@everyone", DEFAULT_EVERYONE)

    def __repr__(self) -> str:
        return f"<FakeGuild {self.name!r} id={self.id}>"

    @property
    def everyone(self) -> FakeRole:
        return self.roles[self.id]

    @property
    def upload_limit(self) -> int:
        """Per-file limit: a test override, else the premium tier's (also sent as `attachment_size_limit`)."""
        if self.upload_limit_override is not None:
            return self.upload_limit_override
        return TIER_UPLOAD_LIMITS[min(max(self.premium_tier, 0), 3)]

    @property
    def bot_member(self) -> FakeMember:
        return self.members[self._fake.bot_user.id]

    @property
    def bot_role(self) -> FakeRole:
        """The managed role Discord creates from the invite's permissions."""
        return next(r for r in self.roles.values() if r.managed_by == self._fake.bot_user.id)

    def add_role(self, name: str, permissions: object = 0, *, mentionable: bool = False) -> FakeRole:
        role = FakeRole(self._fake.ids.next(), self, name, as_bits(permissions), position=len(self.roles))
        role.mentionable = mentionable
        self.roles[role.id] = role
        self._fake.notify()
        return role

    def add_channel(self, name: str, overwrites: list[Overwrite] | None = None) -> FakeChannel:
        channel = FakeChannel(self._fake, self._fake.ids.next(), name, guild=self, position=len(self.channels))
        channel.overwrites = list(overwrites or [])
        self.channels[channel.id] = channel
        self._fake.channels[channel.id] = channel
        self._fake.notify()
        return channel

    def add_member(
        self,
        name: str,
        roles: list[FakeRole] | None = None,
        permissions_extra: object = 0,
        *,
        bot: bool = False,
    ) -> FakeMember:
        """A member; `permissions_extra` becomes a personal role so discord.py's cache agrees with the fake."""
        user = FakeUser(self._fake.ids.next(), name, bot=bot)
        return self.add_user(user, roles, permissions_extra)

    def add_user(
        self, user: FakeUser, roles: list[FakeRole] | None = None, permissions_extra: object = 0
    ) -> FakeMember:
        from .members import FakeMember  # members imports state; this breaks the cycle

        self._fake.users[user.id] = user
        member_roles = list(roles or [])
        extra = as_bits(permissions_extra)
        if extra:
            member_roles.append(self.add_role(f"{user.username}-extra", extra))
        member = FakeMember(self._fake, self, user, member_roles)
        self.members[user.id] = member
        self._fake.notify()
        return member

    def add_bot(self, permissions: int = BOT_INVITE) -> FakeMember:
        role = self.add_role(self._fake.bot_user.username, permissions)
        role.managed_by = self._fake.bot_user.id
        return self.add_user(self._fake.bot_user, [role])

    def member(self, name_or_id: str | int) -> FakeMember:
        for member in self.members.values():
            if name_or_id in (member.id, member.user.username):
                return member
        raise KeyError(name_or_id)

    def channel(self, name: str) -> FakeChannel:
        return next(c for c in self.channels.values() if c.name == name and not c.deleted)

    def permissions_for(self, member: FakeMember, channel: FakeChannel | None = None) -> int:
        base = base_permissions(
            self.everyone.permissions,
            (r.permissions for r in member.roles),
            is_owner=member.id == self.owner_id,
        )
        if channel is None:
            return base
        return channel_permissions(
            base,
            channel.overwrites,
            everyone_id=self.id,
            role_ids={r.id for r in member.roles},
            member_id=member.id,
        )
