"""How hard a chaos run shakes the bot: the plan, and the plan of the three-process test."""

from __future__ import annotations

from dataclasses import dataclass, field

from bot.emulator import Duration


@dataclass(frozen=True)
class ChaosPlan:
    """How hard to shake the bot. Times are seconds of real time."""

    jobs: int = 100
    min_kills: int = 20
    seed: int = 20261126
    uptime: tuple[float, float] = (0.3, 0.6)  # alive this long after the gateway READY, then SIGKILL
    startup_kill_share: float = 0.2  # share of restarts killed at a random moment before READY
    command_gap: float = 0.08  # mean gap between commands while the bot is up (exponential)
    down_command_share: float = 0.25  # chance that a member also tries while the bot is down
    channels: int = 4
    members: int = 8
    queue_time: Duration = field(default_factory=lambda: Duration.uniform(0.1, 0.5))
    run_time: Duration = field(default_factory=lambda: Duration.uniform(0.2, 0.8))
    ready_timeout: float = 30.0
    # Past the delivery backoff's cap (5 minutes, bot/jobs/delivery.py): a job whose edit landed but whose answer
    # was lost in an outage may rightly wait that long for its next look. Settling ends as soon as all is done.
    settle_timeout: float = 330.0
    # Discord outages: in these lives (counted from 0, while the bot is up) every REST call of the bot answers
    # 503 or has its connection cut for `outage_seconds`, while members keep sending commands; the bot is killed
    # a moment after Discord is back, so what finished meanwhile must be delivered by the next process.
    outage_lives: tuple[int, ...] = (4, 11)  # one process only
    outage_seconds: float = 20.0  # "tens of seconds": longer than a delivery's first few retries
    # Several processes (ProcessesChaosRun): `processes` bots on one PostgreSQL database, process i running shard i
    # of `processes`, and `guilds` servers spread over the shards (server g on shard g % processes); `channels` and
    # `members` are then per server. One process at a time is killed, `uptime` after every process is up again.
    processes: int = 1
    guilds: int = 1
    lease_seconds: float = 3.0  # LEASE_SECONDS of every process
    # How long a killed process stays down before it is started again (a service manager's restart delay): the
    # longer, the more of its jobs the other processes take over before its restart adopts the rest.
    down_time: tuple[float, float] = (0.0, 0.0)


# The plan of tests/chaos/test_processes.py (bench/chaos.py --processes 3 runs it longer). Jobs live a few
# seconds, so that most kills find some in every stage (waiting in a server's line, queued, running, being
# delivered); 6 servers, 2 on each shard; half the restarts are killed again during their own startup.
THREE_PROCESSES = ChaosPlan(
    processes=3,
    guilds=6,
    channels=2,
    members=3,
    jobs=100,
    min_kills=10,
    lease_seconds=3.0,
    uptime=(0.2, 1.2),
    down_time=(0.0, 1.0),  # restarted at once, or after the other processes have taken some of its jobs over
    command_gap=0.3,
    startup_kill_share=0.5,
    queue_time=Duration.uniform(0.3, 2.0),
    run_time=Duration.uniform(0.5, 1.5),
    ready_timeout=30.0,
    settle_timeout=330.0,
)
