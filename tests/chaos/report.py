"""What a chaos run measured: each bot process's life, the jobs a kill orphaned, and the figures it prints."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

from tests.chaos.plan import ChaosPlan


@dataclass
class Life:
    """One bot process from spawn to kill."""

    number: int
    spawned_at: float
    slot: int = 0  # with several processes: which one (it runs shard `slot`)
    pid: int | None = None
    login_after: float | None = None  # spawn -> first REST call (imports, settings, database open)
    ready_after: float | None = None  # spawn -> gateway READY: commands are answered again
    killed_after: float | None = None
    startup_kill: bool = False
    unfinished_at_spawn: int = 0
    exit_code: int | None = None
    outage: str | None = None  # the Discord outage this life went through, if any


@dataclass
class TakeOver:
    """A job a SIGKILL left held by the dead process, and when a live process was seen holding it instead."""

    kill: int  # the number of the life that was killed
    job_id: int
    state: str  # when it was orphaned
    delay: float | None = None  # seconds from the SIGKILL until the database named another holder; None: never
    by_restart: bool = False  # the claimer was the killed process's own restart (it adopts its predecessor's jobs)


@dataclass
class ChaosReport:
    """The figures of one run; `problems` lists every broken promise, one line each."""

    plan: ChaosPlan
    lives: list[Life]
    commands: int = 0
    acknowledged: int = 0
    unacknowledged: int = 0
    unacknowledged_explained: int = 0  # the bot later posted why (its row existed, the ack never left)
    delivered: int = 0
    failed_not_resent: int = 0
    failed_not_resent_reached_runcomfy: int = 0
    lost: int = 0
    duplicate_final_edits: int = 0
    duplicate_result_messages: int = 0
    double_submits: int = 0
    replies_not_final: int = 0
    error_log_lines: int = 0
    duration: float = 0.0
    takeovers: list[TakeOver] = field(default_factory=list)  # several processes only
    problems: list[str] = field(default_factory=list)

    @property
    def kills(self) -> int:
        return sum(1 for life in self.lives if life.killed_after is not None)

    @property
    def startup_kills(self) -> int:
        return sum(1 for life in self.lives if life.startup_kill and life.killed_after is not None)

    @property
    def recoveries(self) -> list[float]:
        return [life.ready_after for life in self.lives if life.ready_after is not None]

    @property
    def starts(self) -> list[float]:
        return [life.login_after for life in self.lives if life.login_after is not None]

    @property
    def take_over_delays(self) -> list[float]:
        return [takeover.delay for takeover in self.takeovers if takeover.delay is not None]

    def figures(self) -> dict[str, Any]:
        recoveries, starts = self.recoveries, self.starts
        several = {
            "orphaned_jobs": len(self.takeovers),
            "taken_over_by_the_restart": sum(1 for takeover in self.takeovers if takeover.by_restart),
            "never_taken_over": sum(1 for takeover in self.takeovers if takeover.delay is None),
            "take_over_seconds": _stats(self.take_over_delays),
            "lease_seconds": self.plan.lease_seconds,
        }
        return {
            "seed": self.plan.seed,
            "processes": self.plan.processes,
            **(several if self.plan.processes > 1 else {}),
            "kills": self.kills,
            "kills_during_startup": self.startup_kills,
            "discord_outages": [life.outage for life in self.lives if life.outage],
            "commands": self.commands,
            "acknowledged": self.acknowledged,
            "unacknowledged_while_down": self.unacknowledged,
            "unacknowledged_explained_later": self.unacknowledged_explained,
            "delivered": self.delivered,
            "failed_not_sent_again": self.failed_not_resent,
            "failed_not_sent_again_but_created_upstream": self.failed_not_resent_reached_runcomfy,
            "lost": self.lost,
            "delivered_twice": self.duplicate_final_edits + self.duplicate_result_messages,
            "double_submits": self.double_submits,
            "replies_not_final": self.replies_not_final,
            "error_log_lines": self.error_log_lines,
            "start_seconds": _stats(starts),
            "recovery_seconds": _stats(recoveries),
            "recovery_each": [round(value, 2) for value in recoveries],
            "duration_seconds": round(self.duration, 1),
        }

    def text(self) -> str:
        f = self.figures()
        start, recovery = f["start_seconds"], f["recovery_seconds"]
        several = self.plan.processes > 1
        lines = [
            f"chaos seed {f['seed']}: {f'{self.plan.processes} processes, ' if several else ''}"
            f"{f['kills']} SIGKILLs ({f['kills_during_startup']} during startup), "
            f"{f['commands']} /imagine commands in {f['duration_seconds']} s",
        ]
        if several:
            lines.append(
                f"  orphaned jobs {f['orphaned_jobs']} ({f['taken_over_by_the_restart']} claimed by the killed "
                f"process's restart, the rest by another process), never taken over {f['never_taken_over']}"
            )
            delays = f["take_over_seconds"]
            shown = f"p50 {delays['median']} · p95 {delays['p95']} · max {delays['max']} s" if delays else "n/a"
            lines.append(
                f"  take-over (SIGKILL -> claimed): {shown}; lease {f['lease_seconds']:g} s from the last renewal, "
                "claimed 0.2 s after it runs out (clock skew)"
            )
        else:
            lines.append(
                f"  Discord outages of {self.plan.outage_seconds:.0f} s: {', '.join(f['discord_outages']) or 'none'}"
            )
        lines += [
            f"  acknowledged {f['acknowledged']}: delivered {f['delivered']}, "
            f"failed 'not sent again' {f['failed_not_sent_again']} "
            f"({f['failed_not_sent_again_but_created_upstream']} of them had reached RunComfy)",
            f"  unacknowledged (sent while down or racing a kill) {f['unacknowledged_while_down']}, "
            f"{f['unacknowledged_explained_later']} of them explained later by a message",
            f"  lost {f['lost']} · delivered twice {f['delivered_twice']} · submits repeated {f['double_submits']} · "
            f"replies not showing a final state {f['replies_not_final']}",
            f"  process start (spawn -> login) {_fmt(start)}",
            f"  recovery (spawn -> gateway READY) {_fmt(recovery)}",
            f"  each recovery: {' '.join(str(value) for value in f['recovery_each'])}",
            f"  ERROR log lines {f['error_log_lines']}",
        ]
        lines += [f"  PROBLEM: {problem}" for problem in self.problems]
        return "\n".join(lines)


def _stats(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)
    return {
        "min": round(ordered[0], 2),
        "median": round(statistics.median(ordered), 2),
        "p95": round(ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))], 2),
        "max": round(ordered[-1], 2),
    }


def _fmt(stats: dict[str, float]) -> str:
    if not stats:
        return "n/a"
    return f"min {stats['min']} · median {stats['median']} · p95 {stats['p95']} · max {stats['max']} s"
