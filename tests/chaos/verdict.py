"""The verdict of a chaos run: every command sent, checked against Discord, the emulator and the database."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bot.emulator import Emulator
from bot.jobs import RESTARTED_WHILE_SUBMITTING
from tests.chaos.fakes import World
from tests.chaos.job_rows import UNFINISHED, JobRow, unannounced
from tests.chaos.plan import ChaosPlan
from tests.chaos.report import ChaosReport, Life
from tests.fakediscord import FakeInteraction, FakeMessage

if TYPE_CHECKING:
    from tests.chaos.harness import Chaos

DONE = "✅ Done"
FAILED = "⚠️ Failed"
NOT_RESENT = "not sent again"


@dataclass
class Sent:
    """One `/imagine` a member sent, and whether a bot process was connected at that moment."""

    index: int
    prompt: str
    interaction: FakeInteraction
    bot_up: bool  # the process running the server's shard was up


def verify(
    plan: ChaosPlan, lives: list[Life], sent: list[Sent], world: World, rows: list[JobRow], logs: list[str]
) -> ChaosReport:
    """The report of a run that sent `sent`, whose bot processes lived `lives` and logged `logs`, and left `rows`."""
    report = ChaosReport(plan, lives, commands=len(sent))
    by_prompt: dict[str, list[JobRow]] = {}
    for row in rows:
        by_prompt.setdefault(row.prompt, []).append(row)
    known = {command.prompt for command in sent}
    for row in rows:
        if row.prompt not in known:
            report.problems.append(f"job {row.id} has a prompt nobody sent: {row.prompt!r}")
        if row.state in UNFINISHED:
            report.problems.append(f"job {row.id} still {row.state} at the end")
        elif unannounced(row):
            report.problems.append(f"job {row.id} {row.state} at the end, its notice still owed")
    messages = [message for channel in world.channels for message in channel.messages]
    for command in sent:
        _verify_one(command, by_prompt.get(command.prompt, []), messages, world.emulator, report)
    report.error_log_lines = sum(1 for line in iter_log_lines(logs) if _is_error_line(line))
    return report


def _verify_one(
    sent: Sent, jobs: list[JobRow], messages: list[FakeMessage], emulator: Emulator, report: ChaosReport
) -> None:
    interaction = sent.interaction
    submits = emulator.submits_for(sent.prompt)
    if submits > 1:
        report.double_submits += submits - 1
        report.problems.append(f"#{sent.index}: submitted {submits} times")
    if len(jobs) > 1:
        report.problems.append(f"#{sent.index}: {len(jobs)} job rows")
    job = jobs[0] if jobs else None
    results = [m for m in messages if job is not None and _shows_result_of(m, job.id)]
    if not interaction.acked:
        report.unacknowledged += 1
        if submits:
            report.problems.append(f"#{sent.index}: never acknowledged, yet sent to RunComfy")
        if job is not None and job.state != "failed":
            report.problems.append(f"#{sent.index}: never acknowledged, yet its job is {job.state}")
        if any(sent.prompt[:40] in m.content or _mentions_job(m, sent.prompt) for m in messages):
            report.unacknowledged_explained += 1
        return
    report.acknowledged += 1
    reply = interaction.original_message
    final = final_text(sent)
    if reply is None or job is None:
        report.lost += 1
        shown = "" if reply is None else f": {'ephemeral ' if reply.ephemeral else ''}{reply.content[:100]!r}"
        report.problems.append(
            f"#{sent.index}: acknowledged but {'no reply' if reply is None else 'no job row'}{shown}"
        )
        return
    done_versions = sum(1 for version in reply.versions if DONE in version.content)
    if done_versions > 1:
        report.duplicate_final_edits += done_versions - 1
        report.problems.append(f"#{sent.index}: the reply was edited to its image {done_versions} times")
    extra_results = [m for m in results if m is not reply]
    if extra_results:
        report.duplicate_result_messages += len(extra_results)
        report.problems.append(f"#{sent.index}: {len(extra_results)} extra result message(s)")
    if final == DONE and job.state == "delivered":
        report.delivered += 1
        if len(reply.attachments) != 1 or submits != 1:
            report.problems.append(
                f"#{sent.index}: delivered with {len(reply.attachments)} attachments, {submits} submits"
            )
    elif final == FAILED and job.state == "failed" and _failed_by_restart(job.error):
        report.failed_not_resent += 1
        report.failed_not_resent_reached_runcomfy += submits
        if (job.error or "")[:40] not in str(reply.embeds):
            report.problems.append(f"#{sent.index}: the reply does not say the restart stopped it")
    elif final is None:
        report.replies_not_final += 1
        report.lost += 1
        report.problems.append(
            f"#{sent.index}: job {job.id} is {job.state}, the reply still shows {reply.content[:80]!r}"
            f"{' (thinking...)' if reply.loading else ''}"
        )
    else:
        report.problems.append(f"#{sent.index}: job {job.id} {job.state} ({job.error}), reply shows {final}")


def assert_promises_kept(report: ChaosReport, run: Chaos) -> None:
    """What every chaos test asserts: each acknowledged command delivered once or honestly failed, nothing
    submitted twice, nothing left behind, enough commands met a running bot to prove it, every kill made."""
    plan = report.plan
    assert not report.problems, f"{report.text()}\n--- last bot logs ---\n{run.log_tail()}"
    assert report.kills >= plan.min_kills
    assert report.commands == plan.jobs
    assert report.lost == 0
    assert report.duplicate_final_edits == report.duplicate_result_messages == 0
    assert report.double_submits == 0
    assert report.replies_not_final == 0
    assert report.acknowledged == report.delivered + report.failed_not_resent
    assert report.acknowledged >= plan.jobs * 0.6, "too few commands met a running bot to prove anything"


def _failed_by_restart(error: str | None) -> bool:
    """The honest end of a job a kill caught before RunComfy confirmed it: failed, never sent (again).

    RESTARTED_WHILE_SUBMITTING when it may have reached RunComfy; the waiting line (bot/jobs/line.py) has its own
    sentence for a job that never left the bot.
    """
    return error == RESTARTED_WHILE_SUBMITTING or (error or "").startswith("The bot restarted")


def final_text(sent: Sent) -> str | None:
    reply = sent.interaction.original_message
    if reply is None or reply.loading:
        return None
    for marker in (DONE, FAILED):
        if marker in reply.content:
            return marker
    return None


def _shows_result_of(message: FakeMessage, job_id: int) -> bool:
    return any(attachment.filename.startswith(f"imagine-{job_id}.") for attachment in message.attachments)


def _mentions_job(message: FakeMessage, prompt: str) -> bool:
    return any(prompt[:40] in str(embed.get("description", "")) for embed in message.embeds)


def iter_log_lines(logs: list[str]) -> Iterator[str]:
    for log in logs:
        yield from log.splitlines()


def _is_error_line(line: str) -> bool:
    """An ERROR record, in either LOG_FORMAT."""
    return " ERROR " in line or (line.startswith("{") and '"level": "ERROR"' in line)
