"""What every hostile-input case shares: the scene it plays in, the changes it may cause, the answers it expects.

Each case (tests/e2e/hostile/test_*.py) does one hostile thing and checks two
facts: the answer (an ephemeral sentence, or a reply showing a clear final
state) and the changes it caused, counted as RunComfy submits, job rows and
public messages. For a refusal all three stay at zero. Cases that must make an
image (a prompt that is strange but valid) say so in their expected changes.
The `play` fixture (tests/e2e/hostile/conftest.py) plays one.

Discord validates option types, lengths and ranges against the registered
schema before an interaction exists, so no member can send an empty prompt,
10,000 characters or seed -1; the fake's `run_command` refuses them the same
way. Those rows send the raw interaction a modified client (or a Discord bug)
would produce (`World.raw_command`), because the bot must not trust that check alone.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from bot.app import ImagineBot
from bot.emulator import Emulator
from bot.settings import Settings
from tests.chaos.job_rows import read_jobs
from tests.chaos.verdict import DONE
from tests.e2e.conftest import reply_showing
from tests.fakediscord import FakeChannel, FakeDiscord, FakeGuild, FakeInteraction, FakeMember, FakeMessage

STRING, INTEGER = 3, 4


@dataclass(frozen=True)
class Changes:
    submits: int = 0
    jobs: int = 0
    messages: int = 0  # new public (non-ephemeral) messages in the guild


ONE_IMAGE = Changes(submits=1, jobs=1, messages=1)
BILLED_NO_IMAGE = Changes(submits=1, jobs=1, messages=1)  # RunComfy made it; the reply says why nobody sees it


@dataclass
class World:
    fake: FakeDiscord
    bot: ImagineBot
    emulator: Emulator
    settings: Settings
    guild: FakeGuild
    general: FakeChannel
    alice: FakeMember
    bob: FakeMember
    before: tuple[int, int, int] = (0, 0, 0)

    def counts(self) -> tuple[int, int, int]:
        # Deleted messages still count: what was posted was posted.
        public = sum(1 for channel in self.guild.channels.values() for m in channel.messages if not m.ephemeral)
        return len(self.emulator.submits), len(read_jobs(self.settings.database_path)), public

    def mark(self) -> None:
        """Everything before this was setting the scene; count changes from here."""
        self.before = self.counts()

    async def result(self, prompt: str = "a calm lake at dawn") -> FakeMessage:
        """A delivered image of alice's, to click and react on."""
        interaction = await self.alice.run_command("imagine", self.general, prompt=prompt)
        message = await reply_showing(self.fake, interaction, DONE)
        await self.fake.wait_for(lambda: all(row.state == "delivered" for row in self.rows()), 10)
        return message

    def rows(self) -> list[Any]:
        return read_jobs(self.settings.database_path)

    async def raw_command(self, **options: Any) -> FakeInteraction:
        """/imagine with options the Discord client would refuse to send (see the module docstring)."""
        command = self.fake.commands.find("imagine", self.guild.id)
        assert command is not None
        types = {"prompt": STRING, "aspect_ratio": STRING, "seed": INTEGER}
        data = {
            "id": str(command["id"]),
            "name": "imagine",
            "type": 1,
            "guild_id": str(self.guild.id),
            "options": [{"name": name, "type": types[name], "value": value} for name, value in options.items()],
        }
        interaction = FakeInteraction(
            self.fake, interaction_type=2, member=self.alice, channel=self.general, data=data, command_name="imagine"
        )
        return await self.fake.dispatch_interaction(interaction)


async def ephemeral_answer(interaction: FakeInteraction, text: str) -> None:
    answer = await interaction.wait_for_message(10)
    assert answer.ephemeral, answer.content
    assert text in answer.content, answer.content


def no_pings(message: FakeMessage) -> None:
    pings = message.all_pings()
    assert not pings.everyone
    assert not pings.here
    assert not pings.roles
    assert not pings.users


@dataclass(frozen=True)
class Case:
    act: Callable[[World], Awaitable[None]]
    changes: Changes = Changes()
    localhost_api: bool = False  # the bot reaches the emulator as "localhost", so 127.0.0.1 is not its API host


Play = Callable[[Case], Awaitable[None]]  # the `play` fixture: one case, its answer and its changes checked
