"""Three bot processes on one real PostgreSQL, one SIGKILLed at a time: nothing lost, paid twice or left behind.

Each process is the real `python -m bot run`, running one shard of three
(`SHARD_COUNT=3`, its own `SHARD_IDS`), with `LEASE_SECONDS=3`, against the
fake Discord (servers spread over the shards) and the RunComfy emulator. The
promises of issue 15: every acknowledged /imagine is delivered exactly once (or
failed with the honest "not sent again" when a kill caught it in
`submitting`), no submit is repeated, nothing is left unfinished in the
database, and every job a dead process held is taken over by a live process
(how soon, meant to be within the lease, is printed as p50/p95, never
asserted). A process whose shards overlap a running one's is
refused at start with one sentence. `python -m bench.chaos --processes 3`
runs longer plans.
"""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path

import asyncpg
import pytest

from bot.emulator import Duration
from tests.chaos.bot_process import BotProcess
from tests.chaos.fakes import world
from tests.chaos.plan import THREE_PROCESSES, ChaosPlan
from tests.chaos.processes_run import ProcessesChaosRun
from tests.chaos.verdict import DONE, assert_promises_kept
from tests.fakediscord import FakeInteraction

pytestmark = [pytest.mark.chaos, pytest.mark.postgres]

REFUSED = re.compile(
    r"error: shards? (?P<shards>[\d,]+) (is|are) already run by process (?P<process>\S+) on host \S+ "
    r"\(pid (?P<pid>\d+)\) since [\d-]+ [\d:]+ UTC; give each process its own SHARD_IDS"
)


@pytest.mark.timeout(180)
async def test_sigkilling_one_process_at_a_time_loses_and_doubles_nothing(
    tmp_path: Path, postgres_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    async with world(THREE_PROCESSES) as chaos_world:
        run = ProcessesChaosRun(THREE_PROCESSES, chaos_world, tmp_path, postgres_url)
        report = await run.run()
    with capsys.disabled():  # the figures belong in the CI log, passing or not
        sys.stdout.write(f"\n{report.text()}\n")
    assert_promises_kept(report, run)  # includes: every orphaned job was taken over (the delays are printed)
    assert report.takeovers, "no kill orphaned a job: the plan proves nothing about taking over"


@pytest.mark.timeout(120)
async def test_overlapping_shards_are_refused_at_start_while_the_others_keep_running(
    tmp_path: Path, postgres_url: str
) -> None:
    plan = ChaosPlan(processes=3, guilds=3, channels=1, members=1, queue_time=Duration.constant(0.2))
    async with world(plan) as chaos_world:
        run = ProcessesChaosRun(plan, chaos_world, tmp_path, postgres_url)
        async with run.running():
            running = {slot.number: slot.process.pid for slot in run.slots if slot.process is not None}
            # Shards 1 and 2 on another set (refused at once), then shard 0 exactly (the same host and shards, as a
            # restart after a crash: refused once the first process's heartbeat is seen to move).
            for number, shard_ids in enumerate(("1,2", "0")):
                intruder = BotProcess(tmp_path, run.environment_for(shard_ids), 100 + number)
                await intruder.start()
                assert intruder.process is not None
                code = await asyncio.wait_for(intruder.process.wait(), 30)
                await intruder.stop()
                output = intruder.log_text().splitlines()
                sentences = [line for line in output if not line.startswith("{")]  # LOG_FORMAT=json: logs are {..}
                assert code == 2, intruder.log_text()[-3000:]
                assert len(sentences) == 1, output
                refused = REFUSED.fullmatch(sentences[0])
                assert refused is not None, sentences[0]
                shard = int(refused["shards"].split(",")[0])
                assert int(refused["pid"]) == running[shard]
                assert shard in {int(s) for s in shard_ids.split(",")}
            assert all(slot.process is not None and not slot.process.exited for slot in run.slots)
            async with asyncpg.create_pool(postgres_url, min_size=1, max_size=1) as pool:
                live = await pool.fetch("SELECT pid, shard_ids FROM processes ORDER BY shard_ids")
            assert [(row["pid"], list(row["shard_ids"])) for row in live] == [(running[s], [s]) for s in range(3)]
            # ...and still answer: an image in every server, whatever shard it is on.
            asked = []
            for guild in chaos_world.guilds:
                member, channel = chaos_world.members_of(guild)[0], chaos_world.channels_of(guild)[0]
                asked.append(await member.run_command("imagine", channel, prompt=f"still there? {guild.name}"))
            await chaos_world.fake.wait_for(lambda: all(_shows_image(interaction) for interaction in asked), 30)


def _shows_image(interaction: FakeInteraction) -> bool:
    reply = interaction.original_message
    return reply is not None and DONE in reply.content
