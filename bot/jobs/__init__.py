"""The job manager and its parts; `JobManager` is what the rest of the bot talks to."""

from bot.jobs.delivery import Delivered, Destination, Gone, RecoveredReply, Reply, Retry
from bot.jobs.line import Limit, LimitReachedError, Load, Ticket
from bot.jobs.manager import JobManager
from bot.jobs.upstream import RESTARTED_WHILE_SUBMITTING, CancelOutcome

__all__ = [
    "RESTARTED_WHILE_SUBMITTING",
    "CancelOutcome",
    "Delivered",
    "Destination",
    "Gone",
    "JobManager",
    "Limit",
    "LimitReachedError",
    "Load",
    "RecoveredReply",
    "Reply",
    "Retry",
    "Ticket",
]
