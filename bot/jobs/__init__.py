"""The job manager and its parts; `JobManager` is what the rest of the bot talks to."""

from bot.jobs.budget import Budget, BudgetState
from bot.jobs.delivery import Delivered, Destination, Gone, RecoveredReply, Reply, Retry
from bot.jobs.limits import Limit, LimitReachedError
from bot.jobs.line import Load, Ticket
from bot.jobs.manager import JobManager
from bot.jobs.upstream import RESTARTED_WHILE_SUBMITTING, CancelOutcome

__all__ = [
    "RESTARTED_WHILE_SUBMITTING",
    "Budget",
    "BudgetState",
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
