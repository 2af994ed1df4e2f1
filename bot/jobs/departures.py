"""Where jobs are shown going away: a reply deleted, a channel deleted or closed to the bot, the bot removed from a
server. Nothing more is sent for such jobs; what was not paid for yet is dropped, and a job already generating is
billed and ends undeliverable once made (there is nowhere to put it).

With several processes the fact (`deleted_at`) is written by whichever process heard it, and the job's holder is
told to act on it (bot/jobs/leases.py); a process taking the job over later sees `deleted_at` and acts then.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from bot.clock import Clock
from bot.jobs.delivery import Delivery
from bot.jobs.events import ReplyGone
from bot.jobs.leases import LeaseKeeper
from bot.jobs.ledger import Ledger
from bot.runcomfy import RunComfyClient
from storage.models import MADE_STATES, Job, JobState

log = logging.getLogger(__name__)

REPLY_GONE = "the reply was deleted"
CHANNEL_GONE = "the channel was deleted, or the bot can no longer post in it"
GUILD_GONE = "the bot was removed from the server"


class Departures:
    """Ends the jobs whose place to be shown went away (the job manager's part for it)."""

    def __init__(
        self, ledger: Ledger, client: RunComfyClient, delivery: Delivery, clock: Clock, keeper: LeaseKeeper | None
    ) -> None:
        self.ledger = ledger
        self.client = client
        self.delivery = delivery
        self.clock = clock
        self.keeper = keeper

    async def reply_deleted(self, message_id: int) -> None:
        """A message was deleted; if it was a job's reply, nothing more is sent for that job, and what was not
        paid for yet is dropped."""
        job = await self.ledger.store.by_message_id(message_id)
        if job is not None:
            await self.gone(job, REPLY_GONE)

    async def reply_gone(self, job_id: int, *, channel: bool = False) -> None:
        """Discord said the job's reply no longer exists (an edit met "unknown message"); with `channel`, that the
        bot can no longer post in the reply's channel at all (deleted, or Missing Access): then every live job of
        that channel ends, and none waiting there is sent."""
        job = await self.ledger.store.get(job_id)
        if job is None:
            return
        if channel and job.origin.channel_id is not None:
            await self.channel_gone(job.origin.channel_id)
        else:
            await self.gone(job, REPLY_GONE)

    async def channel_gone(self, channel_id: int) -> None:
        """A channel was deleted, or the bot can no longer post there: its live jobs end without being sent."""
        await self._all_gone(await self.ledger.store.channel_unfinished(channel_id), CHANNEL_GONE)

    async def guild_gone(self, guild_id: int) -> None:
        """The bot left (or was removed from) a server: its live jobs end without being sent."""
        await self._all_gone(await self.ledger.store.guild_unfinished(guild_id), GUILD_GONE)

    async def _all_gone(self, jobs: Sequence[Job], reason: str) -> None:
        """Waiting jobs end first: cancelling a running one frees a slot, which must not go to one of them. Each
        job ends on its own: one that fails (RunComfy refusing a cancel, a store error) leaves the others ending."""
        for job in sorted(jobs, key=lambda job: job.state is not JobState.WAITING):
            try:
                await self.gone(job, reason)
            except Exception:
                log.exception("job %d: not ended after '%s'", job.id, reason, extra={"job_id": job.id})

    async def gone(self, job: Job, reason: str) -> None:
        """Nowhere to show this job any more. Unsent jobs end quietly; a queued one is cancelled upstream where
        RunComfy allows it; one already generating is billed and ends undeliverable when done."""
        gone = (
            await self.ledger.note(
                job.id,
                expect=None,
                event=lambda row: ReplyGone(row, reason),
                owned=False,  # a fact, whichever process heard it
                deleted_at=job.deleted_at or self.clock.now(),
            )
            or job
        )
        log.info("job %d: %s", job.id, reason, extra={"job_id": job.id})
        if not self.ledger.mine(gone):
            if self.keeper is not None and gone.lease_owner is not None and not gone.state.is_final:
                await self.keeper.tell(gone, "gone", reason=reason)  # its holder acts; a taker sees deleted_at
            return
        if gone.state is JobState.WAITING:
            await self.ledger.cancel(gone, reason, expect=JobState.WAITING, notify=False)
        elif gone.state is JobState.IN_QUEUE and gone.request_id is not None:
            answer = await self.client.cancel(gone.request_id)
            if answer.cancelled:
                await self.ledger.cancel(gone, reason, expect=JobState.IN_QUEUE, notify=False)
        elif gone.state in MADE_STATES or gone.notice_pending:
            self.delivery.schedule(gone)  # the next attempt sees the reply is gone and sends nothing
