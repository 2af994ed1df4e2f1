"""Messages as a member sees them: content, embeds, files, buttons, reactions, edits, and who got pinged."""

from __future__ import annotations

import io
import mimetypes
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from PIL import Image, UnidentifiedImageError

from .permissions import Perm

if TYPE_CHECKING:
    from .interactions import FakeInteraction
    from .state import FakeChannel, FakeUser

EPHEMERAL = 1 << 6
LOADING = 1 << 7
SUPPRESS_EMBEDS = 1 << 2
SUPPRESS_NOTIFICATIONS = 1 << 12
COMPONENTS_V2 = 1 << 15

_USER_MENTION = re.compile(r"<@!?(\d+)>")
_ROLE_MENTION = re.compile(r"<@&(\d+)>")


def image_size(filename: str, data: bytes) -> tuple[int | None, int | None]:
    """Width and height, as Discord reports them for an image attachment (None for anything else)."""
    content_type = mimetypes.guess_type(filename)[0]
    if not (content_type and content_type.startswith("image/")):
        return None, None
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.size
    except (UnidentifiedImageError, OSError, ValueError):
        return None, None


@dataclass(eq=False)
class FakeAttachment:
    id: int
    filename: str
    data: bytes
    content_type: str | None
    description: str | None = None
    width: int | None = None
    height: int | None = None
    url: str = ""
    signer: Callable[[str, str], str] | None = None  # the CDN's: every payload hands out a freshly signed link

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def path(self) -> str:
        return "/" + self.url.split("/", 3)[3] if self.url.count("/") >= 3 else self.url

    def link(self) -> str:
        """The URL as a payload gives it: signed and valid for a day from now, like Discord's."""
        return self.signer(self.url, self.path) if self.signer is not None else self.url


@dataclass(frozen=True)
class Pings:
    """Who a message actually notified, given its content, allowed_mentions and the author's permissions."""

    users: frozenset[int] = frozenset()
    roles: frozenset[int] = frozenset()
    everyone: bool = False  # @everyone
    here: bool = False  # @here

    def __or__(self, other: Pings) -> Pings:
        return Pings(
            self.users | other.users, self.roles | other.roles, self.everyone or other.everyone, self.here or other.here
        )

    @property
    def anyone_en_masse(self) -> bool:
        return self.everyone or self.here or bool(self.roles)


@dataclass
class MessageVersion:
    """One version of a message; `FakeMessage.history` keeps every version an edit replaced."""

    content: str = ""
    embeds: list[dict[str, Any]] = field(default_factory=list)
    attachments: list[FakeAttachment] = field(default_factory=list)
    components: list[dict[str, Any]] = field(default_factory=list)
    flags: int = 0
    pings: Pings = field(default_factory=Pings)
    edited_at: float | None = None


class FakeMessage:
    def __init__(self, message_id: int, channel: FakeChannel, author: FakeUser, created_at: float) -> None:
        self.id = message_id
        self.channel = channel
        self.author = author
        self.created_at = created_at
        self.current = MessageVersion()
        self.history: list[MessageVersion] = []
        self.reactions: dict[str, set[int]] = {}
        self.message_reference: dict[str, Any] | None = None
        self.referenced: FakeMessage | None = None
        self.interaction: FakeInteraction | None = None
        self.webhook_id: int | None = None
        self.deleted = False

    def __repr__(self) -> str:
        return f"<FakeMessage id={self.id} #{self.channel.name} by {self.author.username}: {self.content[:40]!r}>"

    # The current version, flattened for tests.
    @property
    def content(self) -> str:
        return self.current.content

    @property
    def embeds(self) -> list[dict[str, Any]]:
        return self.current.embeds

    @property
    def attachments(self) -> list[FakeAttachment]:
        return self.current.attachments

    @property
    def components(self) -> list[dict[str, Any]]:
        return self.current.components

    @property
    def flags(self) -> int:
        return self.current.flags

    @property
    def pings(self) -> Pings:
        return self.current.pings

    @property
    def edited_at(self) -> float | None:
        return self.current.edited_at

    @property
    def ephemeral(self) -> bool:
        return bool(self.flags & EPHEMERAL)

    @property
    def loading(self) -> bool:
        """A deferred interaction response still showing "Bot is thinking..."."""
        return bool(self.flags & LOADING)

    @property
    def versions(self) -> list[MessageVersion]:
        return [*self.history, self.current]

    def all_pings(self) -> Pings:
        """Everything any version of this message pinged."""
        result = Pings()
        for version in self.versions:
            result = result | version.pings
        return result

    def items(self) -> list[dict[str, Any]]:
        """Every interactive component (buttons, selects), flattened out of rows and containers."""
        found: list[dict[str, Any]] = []

        def walk(components: list[dict[str, Any]]) -> None:
            for component in components:
                if component.get("type") in (2, 3, 5, 6, 7, 8):
                    found.append(component)
                walk(component.get("components", []))
                if isinstance(component.get("accessory"), dict):
                    walk([component["accessory"]])

        walk(self.components)
        return found

    def buttons(self) -> list[dict[str, Any]]:
        return [c for c in self.items() if c.get("type") == 2]

    def component(self, custom_id: str) -> dict[str, Any] | None:
        return next((c for c in self.items() if c.get("custom_id") == custom_id), None)

    def reaction_users(self, emoji: str) -> set[int]:
        return set(self.reactions.get(emoji, set()))


def compute_pings(
    content: str,
    allowed_mentions: dict[str, Any] | None,
    *,
    default_parse: tuple[str, ...],
    author_perms: int,
    member_ids: set[int],
    roles: dict[int, bool],
    reply_author: int | None,
    author_id: int,
) -> Pings:
    """Discord's mention resolution. `roles` maps role id -> mentionable."""
    if allowed_mentions is None:
        parse = set(default_parse)
        user_list: set[int] = set()
        role_list: set[int] = set()
        replied_user = True
    else:
        parse = set(allowed_mentions.get("parse") or [])
        user_list = {int(u) for u in allowed_mentions.get("users") or []}
        role_list = {int(r) for r in allowed_mentions.get("roles") or []}
        replied_user = bool(allowed_mentions.get("replied_user", False))
    can_mass = bool(author_perms & Perm.MENTION_EVERYONE)
    users = {
        uid
        for uid in map(int, _USER_MENTION.findall(content))
        if uid in member_ids and ("users" in parse or uid in user_list)
    }
    pinged_roles = {
        rid
        for rid in map(int, _ROLE_MENTION.findall(content))
        if rid in roles and ("roles" in parse or rid in role_list) and (roles[rid] or can_mass)
    }
    if reply_author is not None and replied_user and reply_author != author_id:
        users.add(reply_author)
    mass = "everyone" in parse and can_mass
    return Pings(
        users=frozenset(users),
        roles=frozenset(pinged_roles),
        everyone=mass and "@everyone" in content,
        here=mass and "@here" in content,
    )
