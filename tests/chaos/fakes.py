"""The fake Discord and the RunComfy emulator a chaos run points the bot at, with its servers and members."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from bot.emulator import Emulator, EmulatorConfig
from tests.chaos.plan import ChaosPlan
from tests.fakediscord import FakeChannel, FakeDiscord, FakeGuild, FakeMember, Perm

RUNCOMFY_TOKEN = "rc-SECRET-chaos-token-51c9"


@dataclass
class World:
    fake: FakeDiscord
    emulator: Emulator
    guilds: list[FakeGuild]
    channels: list[FakeChannel]  # of every server
    members: list[FakeMember]  # of every server

    @property
    def guild(self) -> FakeGuild:
        return self.guilds[0]

    def channels_of(self, guild: FakeGuild) -> list[FakeChannel]:
        return [channel for channel in self.channels if channel.guild is guild]

    def members_of(self, guild: FakeGuild) -> list[FakeMember]:
        return [member for member in self.members if member.guild is guild]


@contextlib.asynccontextmanager
async def world(plan: ChaosPlan) -> AsyncIterator[World]:
    """A fake Discord with `plan.guilds` servers (each with `plan.channels` channels and `plan.members` members,
    server g on shard g of `plan.processes` when there are several), and an emulator."""
    config = EmulatorConfig(queue_time=plan.queue_time, run_time=plan.run_time)
    async with FakeDiscord(seed=plan.seed) as fake, Emulator(config, token=RUNCOMFY_TOKEN, seed=plan.seed) as emu:
        guilds, channels, members = [], [], []
        for index in range(plan.guilds):
            if plan.processes > 1:
                guild = fake.add_guild(f"Chaos Server {index}", on_shard=(index % plan.processes, plan.processes))
            else:
                guild = fake.add_guild("Chaos Server" if plan.guilds == 1 else f"Chaos Server {index}")
            guilds.append(guild)
            channels += [guild.add_channel(f"chaos-{number}") for number in range(plan.channels)]
            # Server admins skip the per-member limits (bot/jobs/limits.py), so every command becomes a job; nobody
            # skips the server's line, so jobs past its concurrency wait (state `waiting`) and are started by the bot.
            admins = guild.add_role("Admins", permissions=Perm.MANAGE_GUILD)
            members += [guild.add_member(f"member{number}", roles=[admins]) for number in range(plan.members)]
        yield World(fake, emu, guilds, channels, members)
