"""Shared fixtures: a started fake Discord with the default test guild, and a real PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tests.fakediscord import FakeChannel, FakeDiscord, FakeGuild, FakeMember, Perm
from tests.postgres_fixtures import empty_postgres_url, postgres_server, postgres_url

__all__ = ["empty_postgres_url", "postgres_server", "postgres_url"]  # fixtures for every test folder


@pytest.fixture
async def fake_discord() -> AsyncIterator[FakeDiscord]:
    """ "Test Server" with #general, members alice and bob, and a moderator (Manage Server, Manage Messages)."""
    fake = FakeDiscord()
    await fake.start()
    guild = fake.add_guild("Test Server", premium_tier=0)
    guild.add_channel("general")
    guild.add_member("alice")
    guild.add_member("bob")
    mods = guild.add_role("Moderators", permissions=Perm.MANAGE_GUILD | Perm.MANAGE_MESSAGES)
    guild.add_member("moderator", roles=[mods])
    try:
        yield fake
    finally:
        await fake.close()
    assert not fake.unknown_routes, f"the bot called routes the fake does not know: {fake.unknown_routes}"
    await asyncio.sleep(0)  # let finished connection handlers unwind
    current = asyncio.current_task()
    stray = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
    assert not stray, f"tasks left running after the test: {stray}"


@pytest.fixture
def guild(fake_discord: FakeDiscord) -> FakeGuild:
    return fake_discord.guild("Test Server")


@pytest.fixture
def general(guild: FakeGuild) -> FakeChannel:
    return guild.channel("general")


@pytest.fixture
def alice(guild: FakeGuild) -> FakeMember:
    return guild.member("alice")


@pytest.fixture
def bob(guild: FakeGuild) -> FakeMember:
    return guild.member("bob")


@pytest.fixture
def moderator(guild: FakeGuild) -> FakeMember:
    return guild.member("moderator")
