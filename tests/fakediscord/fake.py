"""`FakeDiscord`: the fake's state, its server, and what a test (or a moderator) does to it."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import random
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from aiohttp import web

from . import rest_app, rest_channels, rest_interactions
from .cdn import Cdn
from .clock import FakeClock
from .commands import CommandRegistry
from .faults import Fault, FaultInjector, Hold, Matcher, Outage
from .gateway import Gateway, GatewaySession, Intent
from .ids import Snowflakes, new_token
from .interactions import FakeInteraction, InteractionRegistry, interaction_create_payload
from .messages import FakeAttachment, FakeMessage, MessageVersion
from .payloads import channel_payload, emoji_payload, member_payload, message_payload
from .permissions import BOT_INVITE, DM_PERMISSIONS, as_bits
from .ratelimit import RateLimiter
from .server import RecordedRequest, RestServer
from .state import DM_CHANNEL, FakeChannel, FakeGuild, FakeUser
from .summary import summarize

T = TypeVar("T")


class FakeDiscord:
    """A Discord that speaks REST + gateway on 127.0.0.1 and enforces the platform's rules.

    Point discord.py at it with `run_bot(fake, bot)` (tests/fakediscord/runner.py).
    """

    def __init__(self, *, bot_name: str = "ImagineBot", seed: int = 0) -> None:
        self.clock = FakeClock()
        self.ids = Snowflakes()
        self.random = random.Random(seed)
        self.bot_user = FakeUser(self.ids.next(), bot_name, bot=True)
        self.application_id = self.bot_user.id
        self.bot_token = f"{base64.b64encode(str(self.bot_user.id).encode()).decode()}.{new_token('fake')}"
        self.owner = FakeUser(self.ids.next(), "app-owner")
        self.users: dict[int, FakeUser] = {self.bot_user.id: self.bot_user, self.owner.id: self.owner}
        self.guilds: dict[int, FakeGuild] = {}
        self.left_guilds: list[FakeGuild] = []
        self.channels: dict[int, FakeChannel] = {}
        self.messages: dict[int, FakeMessage] = {}
        self.attachments: dict[int, FakeAttachment] = {}
        self.cdn = Cdn(self.clock)
        self.requests: list[RecordedRequest] = []
        self.nonces: dict[tuple[int, str], tuple[FakeMessage, float]] = {}  # (author, nonce) -> first message, when
        self.outage: Outage | None = None
        self.holds: list[Hold] = []
        self.unknown_routes: list[str] = []
        self.privileged_intents = 0  # Intent bits enabled in the developer portal
        self.bot_public = True  # "Public Bot" in the developer portal (Discord's default)
        self.recommended_shards = 1  # GET /gateway/bot `shards`: what AutoShardedBot runs without a count
        self.min_shards = 1  # an IDENTIFY for fewer shards closes 4011, as Discord's for over 2,500 guilds a shard
        self.ratelimits = RateLimiter(self.clock)
        self.faults = FaultInjector(self.random)
        self.commands = CommandRegistry(self.ids, self.clock, self.application_id)
        self.interactions = InteractionRegistry(self.clock, self.notify)
        self.gateway = Gateway(self)
        self._rest = RestServer(self)
        for module in (rest_app, rest_channels, rest_interactions):
            module.register(self._rest)
        self._runner: web.AppRunner | None = None
        self.port = 0
        self._changed = asyncio.Event()

    # Lifecycle
    async def start(self) -> FakeDiscord:
        self._runner = web.AppRunner(self._rest.build_app(), handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        self.interactions.start()
        return self

    async def close(self) -> None:
        await self.interactions.stop()
        await self.gateway.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeDiscord:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def rest_base(self) -> str:
        return f"{self.base_url}/api/v10"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"

    @property
    def application_flags(self) -> int:
        """The *_LIMITED flags the developer portal sets for each privileged intent switched on."""
        flags = 0
        for intent, flag in ((Intent.GUILD_PRESENCES, 1 << 13), (Intent.GUILD_MEMBERS, 1 << 15)):
            if self.privileged_intents & intent:
                flags |= flag
        if self.privileged_intents & Intent.MESSAGE_CONTENT:
            flags |= 1 << 19
        return flags

    # Building the world
    def add_guild(
        self,
        name: str = "Test Server",
        *,
        premium_tier: int = 0,
        upload_limit: int | None = None,
        bot_permissions: object = BOT_INVITE,
        on_shard: tuple[int, int] | None = None,
    ) -> FakeGuild:
        """A guild the bot was invited to with `bot_permissions` (its managed role); @everyone has defaults.

        `on_shard=(shard_id, num_shards)` picks an id that Discord routes to that shard, so a test
        can put guilds on different shards (ids made together otherwise share one).
        """
        guild_id = self.ids.next() if on_shard is None else self.ids.next_on_shard(*on_shard)
        guild = FakeGuild(self, guild_id, name, premium_tier=premium_tier, upload_limit=upload_limit)
        guild.owner_id = self.owner.id
        self.guilds[guild.id] = guild
        guild.add_bot(as_bits(bot_permissions))
        self.notify()
        return guild

    def dm_channel(self, user: FakeUser) -> FakeChannel:
        for channel in self.channels.values():
            if channel.is_dm and channel.recipient is user:
                return channel
        channel = FakeChannel(self, self.ids.next(), f"dm-{user.username}", guild=None, kind=DM_CHANNEL, recipient=user)
        self.channels[channel.id] = channel
        self.notify()
        return channel

    def bot_permissions(self, channel: FakeChannel) -> int:
        if channel.guild is None:
            return DM_PERMISSIONS
        return channel.guild.permissions_for(channel.guild.bot_member, channel)

    # Reading state
    def guild(self, name: str) -> FakeGuild:
        return next(g for g in self.guilds.values() if g.name == name)

    def message(self, message_id: int) -> FakeMessage:
        return self.messages[message_id]

    @property
    def failed_interactions(self) -> list[FakeInteraction]:
        return self.interactions.failed

    @property
    def rate_limited_count(self) -> int:
        """429s served so far (bucket, global, injected)."""
        return self.ratelimits.served_429

    def requests_to(self, key: str) -> list[RecordedRequest]:
        """Requests whose `"METHOD /template"` is `key`, e.g. `"PATCH /channels/{channel_id}/messages/{message_id}"`."""
        return [r for r in self.requests if r.key == key]

    def summary(self) -> str:
        return summarize(self)

    # Change notification
    def notify(self) -> None:
        """Wake every `wait_for`; called on each recorded request and state change."""
        event, self._changed = self._changed, asyncio.Event()
        event.set()

    async def wait_for(self, predicate: Callable[[], T | None], timeout: float = 5.0) -> T:  # noqa: ASYNC109  # the test-facing API reads better with a timeout
        """Poll `predicate` on every change (and every 50 ms, for state outside the fake) until it is truthy.

        The predicate may answer None while it waits: what comes back is the first truthy answer, never None."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            value = predicate()
            if value:
                return value
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(f"fake Discord: condition not met within {timeout} s\n{self.summary()}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(remaining, 0.05))

    # Chaos
    def inject_fault(
        self,
        match: Matcher,
        status: int = 500,
        *,
        times: int | None = 1,
        retry_after: float = 0.1,
        after: bool = False,
    ) -> Fault:
        """Answer `status` on requests matching a route key/template/path or a predicate on `RouteInfo`."""
        return self.faults.add(Fault(match, status, times, retry_after, after))

    @property
    def fault_rate(self) -> float:
        return self.faults.rate

    @fault_rate.setter
    def fault_rate(self, rate: float) -> None:
        self.faults.rate = rate

    @contextlib.contextmanager
    def rest_outage(self, *, status: int = 503, drop: bool = False) -> Iterator[Outage]:
        """`with fake.rest_outage(): ...` every REST call the bot makes (bot token and interaction tokens alike)
        answers `status`, or with `drop=True` has its connection cut before any answer, until the block ends.
        Interaction callbacks and the gateway stay up, as in Discord's partial outages."""
        outage = self.outage = Outage(status=status, drop=drop)
        try:
            yield outage
        finally:
            self.outage = None
            self.notify()

    @contextlib.contextmanager
    def hold(self, match: Matcher) -> Iterator[Hold]:
        """`with fake.hold("POST /channels/{channel_id}/messages") as held: ...` matching requests hang until
        `held.release()` (or the block ends): a Discord that is slow for one kind of call. Attachment downloads
        are held by `f"GET {CDN_ROUTE}"` (server.py: a CDN slow to hand out a member's image)."""
        held = Hold(match)
        self.holds.append(held)
        try:
            yield held
        finally:
            held.release()
            self.holds.remove(held)

    def expire_token_early(self, interaction: FakeInteraction) -> None:
        interaction.token_expires_at = self.clock.now()
        self.notify()

    async def drop_gateway(self, code: int = 4000) -> None:
        await self.gateway.drop(code)

    def gateway_outage(self) -> contextlib.AbstractAsyncContextManager[None]:
        """`async with fake.gateway_outage(): ...` events meanwhile are replayed on RESUME."""
        return self.gateway.outage()

    # Mutations that reach the bot
    def store_message(
        self,
        channel: FakeChannel,
        author: FakeUser,
        version: MessageVersion,
        *,
        reference: dict[str, Any] | None = None,
        referenced: FakeMessage | None = None,
        interaction: FakeInteraction | None = None,
    ) -> FakeMessage:
        message = FakeMessage(self.ids.next(), channel, author, self.clock.wall())
        message.current = version
        message.message_reference = reference
        message.referenced = referenced
        if interaction is not None:
            message.interaction = interaction
            message.webhook_id = self.application_id
        channel.messages.append(message)
        self.messages[message.id] = message
        self.notify()
        return message

    async def apply_edit(self, message: FakeMessage, version: MessageVersion) -> None:
        version.edited_at = self.clock.wall()
        message.history.append(message.current)
        message.current = version
        self.notify()
        await self.dispatch_message(message, "MESSAGE_UPDATE")

    async def dispatch_message(self, message: FakeMessage, event: str) -> None:
        """MESSAGE_CREATE/UPDATE (GUILD_MESSAGES or DIRECT_MESSAGES); content hidden without MESSAGE_CONTENT."""
        if message.ephemeral:
            return
        guild = message.channel.guild
        intent = Intent.GUILD_MESSAGES if guild is not None else Intent.DIRECT_MESSAGES
        bot_id = self.bot_user.id

        def for_session(session: GatewaySession) -> dict[str, Any]:
            redact = (
                guild is not None
                and not session.wants(Intent.MESSAGE_CONTENT)
                and message.author.id != bot_id
                and bot_id not in message.pings.users
            )
            data = message_payload(message, viewer_id=bot_id, redact=redact)
            if guild is not None and message.author.id in guild.members:
                data["member"] = member_payload(guild.members[message.author.id], with_user=False)
            return data

        await self.gateway.dispatch(event, for_session, guild=guild, intent=intent)

    async def remove_message(self, message: FakeMessage) -> None:
        message.deleted = True
        self.notify()
        if message.ephemeral:
            return
        data = {"id": str(message.id), "channel_id": str(message.channel.id)}
        guild = message.channel.guild
        if guild is not None:
            data["guild_id"] = str(guild.id)
        intent = Intent.GUILD_MESSAGES if guild is not None else Intent.DIRECT_MESSAGES
        await self.gateway.dispatch("MESSAGE_DELETE", data, guild=guild, intent=intent)

    async def delete_message(self, message: FakeMessage) -> None:
        """As a moderator would: the message is gone and the bot gets MESSAGE_DELETE."""
        await self.remove_message(message)

    async def remove_guild(self, guild: FakeGuild) -> None:
        """The bot is no longer in `guild` (it left, or was kicked): GUILD_DELETE, and `left_guilds` records it."""
        self.guilds.pop(guild.id, None)
        self.left_guilds.append(guild)
        self.notify()
        await self.gateway.dispatch("GUILD_DELETE", {"id": str(guild.id)}, guild=guild, intent=Intent.GUILDS)

    async def delete_channel(self, channel: FakeChannel) -> None:
        channel.deleted = True
        self.notify()
        await self.gateway.dispatch(
            "CHANNEL_DELETE", channel_payload(channel), guild=channel.guild, intent=Intent.GUILDS
        )

    async def update_channel(self, channel: FakeChannel) -> None:
        """Tell the bot about changed overwrites (CHANNEL_UPDATE)."""
        await self.gateway.dispatch(
            "CHANNEL_UPDATE", channel_payload(channel), guild=channel.guild, intent=Intent.GUILDS
        )

    async def invite_bot(self, guild: FakeGuild) -> None:
        """The bot is added to `guild` (made with `add_guild`) while it runs: GUILD_CREATE without `unavailable`,
        which is how a join differs from a guild coming back (discord.py: `on_guild_join`, not `on_guild_available`).
        """

        def joined(session: GatewaySession) -> dict[str, Any]:
            payload = self.gateway.guild_create(guild, session)
            payload.pop("unavailable", None)
            return payload

        await self.gateway.dispatch("GUILD_CREATE", joined, guild=guild, intent=Intent.GUILDS)

    async def sync_guild(self, guild: FakeGuild) -> None:
        """Resend the whole guild (GUILD_CREATE, available) so the bot's cache matches roles/tier/members."""
        await self.gateway.dispatch(
            "GUILD_CREATE", lambda s: self.gateway.guild_create(guild, s), guild=guild, intent=Intent.GUILDS
        )

    async def set_reaction(self, message: FakeMessage, emoji: str, user_id: int, *, add: bool) -> None:
        users = message.reactions.setdefault(emoji, set())
        if (user_id in users) == add:
            return
        if add:
            users.add(user_id)
        else:
            users.discard(user_id)
            if not users:
                del message.reactions[emoji]
        self.notify()
        guild = message.channel.guild
        data: dict[str, Any] = {
            "user_id": str(user_id),
            "channel_id": str(message.channel.id),
            "message_id": str(message.id),
            "emoji": emoji_payload(emoji),
            "burst": False,
            "type": 0,
        }
        if guild is not None:
            data["guild_id"] = str(guild.id)
        if add:
            data["message_author_id"] = str(message.author.id)
            data["burst_colors"] = []
            if guild is not None and user_id in guild.members:
                data["member"] = member_payload(guild.members[user_id])
        intent = Intent.GUILD_MESSAGE_REACTIONS if guild is not None else Intent.DIRECT_MESSAGE_REACTIONS
        event = "MESSAGE_REACTION_ADD" if add else "MESSAGE_REACTION_REMOVE"
        await self.gateway.dispatch(event, data, guild=guild, intent=intent)

    async def dispatch_interaction(self, interaction: FakeInteraction) -> FakeInteraction:
        self.interactions.add(interaction)
        self.notify()
        payload = interaction_create_payload(self, interaction)
        await self.gateway.dispatch("INTERACTION_CREATE", payload, guild=interaction.guild)
        return interaction
