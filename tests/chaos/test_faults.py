"""A bad hour upstream and a flaky Discord at once: every job still ends delivered, or with a clear sentence.

RunComfy (the emulator) misbehaves on 30% of API calls, spread over every kind
docs/runcomfy-api.md lists: 5xx, 429 with and without Retry-After, answers too
slow for the client's timeout, dropped connections, malformed JSON, HTTP 200
bodies carrying an `error_code`; on top, some jobs end `completed` with a
failed result and request ids expire soon after a job finishes. Discord (the
fake) answers 10% of the bot's REST calls with 500, 502 or 429, interaction
token edits included, and a third of the interaction tokens die early, so
those replies move to the channel route mid-job.
"""

from __future__ import annotations

import asyncio
import random
import sys
from collections import Counter
from pathlib import Path

import pytest

from bot.app import ImagineBot
from bot.emulator import Duration, Emulator, EmulatorConfig
from bot.jobs.upstream import NO_IMAGE, RESTARTED_WHILE_SUBMITTING
from bot.runcomfy_errors import RunComfyError
from tests.bot_settings import QUICK_POLLING, bot_settings
from tests.chaos.job_rows import read_jobs
from tests.chaos.verdict import DONE, FAILED
from tests.fakediscord import FakeDiscord, FakeInteraction, Perm
from tests.fakediscord.runner import run_bot

pytestmark = pytest.mark.chaos

RUNCOMFY_TOKEN = "rc-SECRET-faults-token-2b7e"
JOBS = 40
EMULATOR_FAULTS = {
    "rate_5xx": 0.08,
    "rate_429": 0.05,
    "rate_429_bare": 0.04,
    "drop_rate": 0.04,
    "slow_rate": 0.03,
    "malformed_rate": 0.04,
    "error_code_rate": 0.02,
}
DISCORD_FAULT_RATE = 0.10
EARLY_EXPIRY_SHARE = 1 / 3


def _subclasses(cls: type[RunComfyError]) -> set[type[RunComfyError]]:
    found = set(cls.__subclasses__())
    for sub in list(found):
        found |= _subclasses(sub)
    return found


# Every sentence a failed job may end with: the fixed user messages of the typed errors and the job manager's own.
CLEAR_MESSAGES = {cls.default_user_message for cls in _subclasses(RunComfyError) | {RunComfyError}} | {
    NO_IMAGE,
    RESTARTED_WHILE_SUBMITTING,
    "RunComfy stopped reporting a usable state for this job. Please try again.",
}


def failure_reason(interaction: FakeInteraction) -> str | None:
    """The "What happened" sentence of a failed reply, without the retry hint."""
    reply = interaction.original_message
    if reply is None or not reply.embeds:
        return None
    for embed_field in reply.embeds[0].get("fields", []):
        if embed_field["name"] == "What happened":
            return str(embed_field["value"]).removesuffix(" Press 🔄 to try again.")
    return None


@pytest.mark.timeout(180)
async def test_thirty_percent_runcomfy_faults_and_ten_percent_discord_faults(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = random.Random(11)
    config = EmulatorConfig(
        queue_time=Duration.uniform(0.1, 0.5),
        run_time=Duration.uniform(0.2, 0.6),
        failure_rate=0.05,  # `completed` on /status, `failed` on /result
        expire_after=2.0,  # a job whose result is fetched too late has an expired request id (404001)
        slow_seconds=1.5,  # slower than the client's 1 s timeout
    )
    async with FakeDiscord(seed=11) as fake, Emulator(config, token=RUNCOMFY_TOKEN, seed=11) as emulator:
        guild = fake.add_guild("Faulty Server")
        channels = [guild.add_channel(f"faulty-{index}") for index in range(3)]
        admins = guild.add_role("Admins", permissions=Perm.MANAGE_GUILD)  # past the per-member limits
        members = [guild.add_member(f"member{index}", roles=[admins]) for index in range(6)]
        settings = bot_settings(
            fake,
            emulator,
            token=RUNCOMFY_TOKEN,
            database_path=tmp_path / "imagine.sqlite3",
            guild_ids=[guild.id],
            runcomfy_http_timeout_seconds=1.0,
            runcomfy_requests_per_second=100,
            **QUICK_POLLING,
        )
        bot = ImagineBot(settings, guild_ready_timeout=0.05)
        async with run_bot(fake, bot):
            for name, rate in EMULATOR_FAULTS.items():
                setattr(config, name, rate)
            fake.fault_rate = DISCORD_FAULT_RATE
            fake.faults.token_routes = True
            sent: list[tuple[str, FakeInteraction]] = []
            expired_early = 0
            for index in range(JOBS):
                prompt = f"faulty {index:02d}: a harbour at dawn"
                interaction = await rng.choice(members).run_command("imagine", rng.choice(channels), prompt=prompt)
                sent.append((prompt, interaction))
                await asyncio.sleep(0.05)
            for _, interaction in sent:
                await interaction.wait_until_acked()
                if rng.random() < EARLY_EXPIRY_SHARE:
                    fake.expire_token_early(interaction)
                    expired_early += 1

            def settled() -> bool:
                return all(_final(interaction) for _, interaction in sent)

            await fake.wait_for(settled, 120)
            for _ in range(100):  # the final write follows Discord's answer
                if not any(row.state not in ("delivered", "failed") for row in read_jobs(settings.database_path)):
                    break
                await asyncio.sleep(0.05)
            fake.fault_rate = 0.0

    rows = {row.prompt: row for row in read_jobs(settings.database_path)}
    outcomes: Counter[str] = Counter()
    problems: list[str] = []
    for prompt, interaction in sent:
        row = rows.get(prompt)
        reply = interaction.original_message
        submits = emulator.submits_for(prompt)
        if submits > 1:
            problems.append(f"{prompt}: submitted {submits} times")
        if row is None or reply is None:
            problems.append(f"{prompt}: no job row or no reply")
            continue
        final = _final(interaction)
        done_edits = sum(1 for version in reply.versions if DONE in version.content)
        if final == DONE and row.state == "delivered" and len(reply.attachments) == 1 and done_edits == 1:
            outcomes["delivered"] += 1
        elif final == FAILED and row.state == "failed" and failure_reason(interaction) in CLEAR_MESSAGES:
            outcomes[f"failed: {failure_reason(interaction)}"] += 1
        else:
            problems.append(f"{prompt}: job {row.state}, reply {reply.content[:60]!r}, {done_edits} image edits")

    discord_faults = Counter(status for _, status in fake.faults.served)
    lines = [
        f"fault injection: {JOBS} jobs; RunComfy faults served {sum(emulator.faults_served.values())} of "
        f"{sum(emulator.calls[route] for route in ('submit', 'status', 'result', 'cancel'))} API calls, "
        f"Discord faults served {sum(discord_faults.values())} of {len(fake.requests)} requests, "
        f"{expired_early} tokens expired early",
        "  RunComfy faults: " + ", ".join(f"{kind} {count}" for kind, count in emulator.faults_served.most_common()),
        "  Discord faults: " + ", ".join(f"HTTP {status} {count}" for status, count in discord_faults.most_common()),
        "  outcomes: " + "; ".join(f"{outcome} × {count}" for outcome, count in outcomes.most_common()),
        f"  submits repeated {sum(max(0, emulator.submits_for(p) - 1) for p, _ in sent)}; problems {len(problems)}",
    ]
    with capsys.disabled():
        sys.stdout.write("\n" + "\n".join(lines + [f"  PROBLEM: {problem}" for problem in problems]) + "\n")
    assert not problems
    assert sum(outcomes.values()) == JOBS
    assert not fake.failed_interactions
    # Without retries about 1 job in 10 would get through 30% faults; with them about half do.
    assert outcomes["delivered"] >= JOBS // 4, "so many failures suggest retries are not working"
    assert set(emulator.faults_served) >= {
        "5xx",
        "429 + Retry-After",
        "429 without Retry-After",
        "dropped connection",
        "slow answer",
        "malformed JSON",
        "200 with error_code",
    }
    assert {500, 502, 429} <= set(discord_faults)


def _final(interaction: FakeInteraction) -> str | None:
    reply = interaction.original_message
    if reply is None or reply.loading:
        return None
    return next((marker for marker in (DONE, FAILED) if marker in reply.content), None)
