"""A protocol-level fake Discord (REST + gateway on 127.0.0.1) for end-to-end tests of a discord.py bot.

    fake = FakeDiscord(); await fake.start()         # or the `fake_discord` fixture (tests/conftest.py)
    guild = fake.add_guild("Test Server", premium_tier=0)
    general = guild.add_channel("general", overwrites=[Overwrite(guild.everyone, deny=Perm.ATTACH_FILES)])
    alice = guild.add_member("alice", roles=[guild.add_role("Mods", Perm.MANAGE_MESSAGES)])
    async with run_bot(fake, bot):                    # Route.BASE + DEFAULT_GATEWAY, restored afterwards
        interaction = await alice.run_command("imagine", general, prompt="a fox")
        message = await interaction.wait_for_message()
        await alice.click(message, "imagine:reroll:1"); await alice.react(message, "🔄")
        fake.clock.advance(16 * 60)                    # tokens expire, deadlines pass, without waiting
    fake.requests, fake.unknown_routes, fake.failed_interactions, fake.rate_limited_count, general.messages

Test bots should pass `guild_ready_timeout=0.05` (a discord.py Client option) so READY takes
milliseconds instead of two seconds.

Sharding is routed as on Discord: `fake.add_guild(..., on_shard=(1, 2))` puts a guild on a shard,
`async with run_bots(fake, [bot_for_shard_0, bot_for_shard_1])` runs one client per "process", and
each session gets only its shard's guilds and events (DMs: shard 0). `fake.recommended_shards` is
what GET /gateway/bot answers; `fake.min_shards` makes an IDENTIFY with fewer shards close 4011.
"""

from .clock import FakeClock
from .fake import FakeDiscord
from .faults import Fault
from .gateway import Intent, shard_of
from .interactions import FakeInteraction, ResponseRecord
from .members import FakeMember
from .messages import FakeAttachment, FakeMessage, MessageVersion, Pings
from .permissions import BOT_INVITE, DEFAULT_EVERYONE, Perm
from .ratelimit import RouteInfo
from .runner import pointed_at, run_bot, run_bots
from .server import CDN_ROUTE, RecordedRequest
from .state import FakeChannel, FakeGuild, FakeRole, FakeUser, Overwrite

__all__ = [
    "BOT_INVITE",
    "CDN_ROUTE",
    "DEFAULT_EVERYONE",
    "FakeAttachment",
    "FakeChannel",
    "FakeClock",
    "FakeDiscord",
    "FakeGuild",
    "FakeInteraction",
    "FakeMember",
    "FakeMessage",
    "FakeRole",
    "FakeUser",
    "Fault",
    "Intent",
    "MessageVersion",
    "Overwrite",
    "Perm",
    "Pings",
    "RecordedRequest",
    "ResponseRecord",
    "RouteInfo",
    "pointed_at",
    "run_bot",
    "run_bots",
    "shard_of",
]
