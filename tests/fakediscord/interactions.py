"""Interactions as Discord tracks them: the 3 s acknowledgement window, the 15 min token, the responses.

The rules: docs/discord-platform.md, INT.

A background watcher on the fake's clock records an interaction as failed ("This
interaction failed", as the member sees it) the moment its 3 s pass unacknowledged;
`clock.advance()` runs the same check at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .clock import FakeClock
from .ids import new_token
from .payloads import channel_payload, member_payload, message_payload

if TYPE_CHECKING:
    from .fake import FakeDiscord
    from .members import FakeMember
    from .messages import FakeMessage
    from .state import FakeChannel

ACK_DEADLINE = 3.0
TOKEN_LIFETIME = 15 * 60.0
KINDS = {2: "command", 3: "component", 4: "autocomplete", 5: "modal"}


@dataclass
class ResponseRecord:
    """One call the bot made with this interaction's id or token, and how the fake answered."""

    route: str  # "callback", "get_original", "edit_original", "delete_original", "followup", ...
    status: int
    at: float
    callback_type: int | None = None
    error_code: int | None = None


class FakeInteraction:
    def __init__(
        self,
        fake: FakeDiscord,
        *,
        interaction_type: int,
        member: FakeMember,
        channel: FakeChannel,
        data: dict[str, Any],
        source_message: FakeMessage | None = None,
        command_name: str | None = None,
    ) -> None:
        self._fake = fake
        self.id = fake.ids.next()
        self.token = new_token("aW50ZXJhY3Rpb24")
        self.type = interaction_type
        self.member = member
        self.channel = channel
        self.guild = channel.guild
        self.data = data
        self.source_message = source_message
        self.command_name = command_name
        self.application_id = fake.application_id
        self.created_at = fake.clock.now()
        self.deadline = self.created_at + ACK_DEADLINE
        self.token_expires_at = self.created_at + TOKEN_LIFETIME
        self.app_permissions = fake.bot_permissions(channel)
        self.acked = False
        self.acked_at: float | None = None
        self.ack_type: int | None = None
        self.failed = False
        self.failed_reason = ""
        self.responses: list[ResponseRecord] = []
        self.original_message: FakeMessage | None = None
        self.followups: list[FakeMessage] = []
        self.modal: dict[str, Any] | None = None
        self.choices: list[dict[str, Any]] | None = None  # what an autocomplete answered
        self.ephemeral = False

    def __repr__(self) -> str:
        state = "failed" if self.failed else f"acked:{self.ack_type}" if self.acked else "pending"
        return f"<FakeInteraction {self.kind} id={self.id} {state}>"

    @property
    def kind(self) -> str:
        return KINDS.get(self.type, str(self.type))

    @property
    def is_component(self) -> bool:
        """Component clicks and modal submits may answer with types 6 and 7."""
        return self.type == 3 or (self.type == 5 and self.source_message is not None)

    def token_valid(self) -> bool:
        return self._fake.clock.now() < self.token_expires_at

    async def wait_until_acked(self, timeout: float = 5.0) -> FakeInteraction:  # noqa: ASYNC109  # the test-facing API reads better with a timeout
        """Until the bot acknowledged it or it failed."""
        await self._fake.wait_for(lambda: self.acked or self.failed, timeout=timeout)
        return self

    async def wait_for_message(self, timeout: float = 5.0) -> FakeMessage:  # noqa: ASYNC109  # the test-facing API reads better with a timeout
        """Until the response message exists with real content (not the "thinking..." placeholder)."""

        def ready() -> FakeMessage | None:
            message = self.original_message
            return message if message is not None and not message.loading else None

        found = await self._fake.wait_for(ready, timeout=timeout)
        assert found is not None  # wait_for returns only a truthy value
        return found


class InteractionRegistry:
    def __init__(self, clock: FakeClock, notify: Callable[[], None]) -> None:
        self._clock = clock
        self._notify = notify
        self.by_id: dict[int, FakeInteraction] = {}
        self.by_token: dict[str, FakeInteraction] = {}
        self.failed: list[FakeInteraction] = []
        self._pending: set[FakeInteraction] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        clock.on_advance(self.check_deadlines)

    def add(self, interaction: FakeInteraction) -> None:
        self.by_id[interaction.id] = interaction
        self.by_token[interaction.token] = interaction
        self._pending.add(interaction)
        self._wake.set()

    def acknowledge(self, interaction: FakeInteraction, callback_type: int) -> None:
        interaction.acked = True
        interaction.acked_at = self._clock.now()
        interaction.ack_type = callback_type
        self._pending.discard(interaction)

    def fail(self, interaction: FakeInteraction, reason: str) -> None:
        self._pending.discard(interaction)
        if not interaction.failed:
            interaction.failed = True
            interaction.failed_reason = reason
            self.failed.append(interaction)
            self._notify()

    def check_deadlines(self) -> None:
        now = self._clock.now()
        for interaction in list(self._pending):
            if now > interaction.deadline:
                self.fail(interaction, "This interaction failed: no response within 3 s")

    def start(self) -> None:
        self._task = asyncio.create_task(self._watch(), name="fakediscord-ack-deadlines")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _watch(self) -> None:
        while True:
            self._wake.clear()
            self.check_deadlines()
            timeout = None
            if self._pending:
                timeout = max(0.0, min(i.deadline for i in self._pending) - self._clock.now()) + 0.001
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)


def interaction_create_payload(fake: FakeDiscord, interaction: FakeInteraction) -> dict[str, Any]:
    """INTERACTION_CREATE with every key dpy's `Interaction._from_data` requires."""
    channel = interaction.channel
    guild = channel.guild
    member = interaction.member
    member_perms = channel.permissions_for(member)
    data: dict[str, Any] = {
        "id": str(interaction.id),
        "application_id": str(fake.application_id),
        "type": interaction.type,
        "token": interaction.token,
        "version": 1,
        "data": interaction.data,
        "channel_id": str(channel.id),
        "channel": channel_payload(channel) | {"permissions": str(member_perms)},
        "app_permissions": str(interaction.app_permissions),
        "locale": "en-US",
        "entitlements": [],
        "attachment_size_limit": channel.upload_limit,
    }
    if guild is not None:
        data |= {
            "guild_id": str(guild.id),
            "guild": {"id": str(guild.id), "locale": "en-US", "features": []},
            "guild_locale": "en-US",
            "member": member_payload(member, permissions=member_perms),
            "authorizing_integration_owners": {"0": str(guild.id)},
            "context": 0,
        }
    else:
        data |= {"user": member_payload(member)["user"], "authorizing_integration_owners": {}, "context": 1}
    if interaction.source_message is not None:
        data["message"] = message_payload(interaction.source_message, viewer_id=fake.bot_user.id)
    return data
