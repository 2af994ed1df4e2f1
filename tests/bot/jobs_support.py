"""What the job manager's tests share: an event recorder, a destination that does as told, a manager factory."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bot.download import DownloadedImage
from bot.jobs import Delivered, JobManager, RecoveredReply, Reply
from bot.jobs.delivery import Outcome
from bot.jobs.events import JobEvent
from storage.models import Job, JobOrigin, NewJob

MODEL = "imagineart/imagineart-1.5-preview/text-to-image"


@dataclass
class Recorder:
    """Every event, in order, with a way to wait for one."""

    events: list[JobEvent] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def __call__(self, event: JobEvent) -> None:
        self.events.append(event)
        self.changed.set()

    async def wait_for(self, kind: type, job_id: int, within: float = 10.0) -> Any:
        async def find() -> JobEvent:
            while True:
                for event in self.events:
                    if isinstance(event, kind) and event.job.id == job_id:
                        return event
                self.changed.clear()
                await self.changed.wait()

        return await asyncio.wait_for(find(), within)

    def kinds(self, job_id: int) -> list[str]:
        return [type(event).__name__ for event in self.events if event.job.id == job_id]

    def of(self, kind: type, job_id: int | None = None) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind) and (job_id is None or e.job.id == job_id)]


@dataclass
class Destination:
    """Delivers to a list; `script` holds outcomes to return first (or exceptions to raise), then Delivered."""

    script: list[Outcome | BaseException] = field(default_factory=list)
    images: list[tuple[int, DownloadedImage]] = field(default_factory=list)
    notices: list[Job] = field(default_factory=list)
    attempts: list[int] = field(default_factory=list)
    gate: asyncio.Event | None = None  # when set to an unset Event, attempts wait on it
    reply: RecoveredReply = field(default_factory=lambda: RecoveredReply(Reply.UNKNOWN))

    async def _next(self, job: Job) -> Outcome:
        self.attempts.append(job.id)
        if self.gate is not None:
            await self.gate.wait()
        if self.script:
            step = self.script.pop(0)
            if isinstance(step, BaseException):
                raise step
            return step
        return Delivered("file")

    async def deliver_images(self, job: Job, images: Sequence[DownloadedImage]) -> Outcome:
        outcome = await self._next(job)
        if isinstance(outcome, Delivered):
            self.images.extend((job.id, image) for image in images)
        return outcome

    async def deliver_notice(self, job: Job) -> Outcome:
        outcome = await self._next(job)
        if isinstance(outcome, Delivered):
            self.notices.append(job)
        return outcome

    async def recover_reply(self, job: Job) -> RecoveredReply:
        return self.reply


ManagerFactory = Callable[..., JobManager]


def new_job(
    prompt: str = "a red fox, watercolor",
    seed: int = 7,
    ratio: str = "16:9",
    *,
    guild: int | None = None,
    channel: int | None = 1,
    user: int | None = 42,
    exempt: bool = False,
) -> NewJob:
    origin = JobOrigin(guild_id=guild, channel_id=channel, user_id=user)
    return NewJob(model=MODEL, prompt=prompt, aspect_ratio=ratio, seed=seed, origin=origin, exempt=exempt)


async def started(
    manager: JobManager, destination: Destination | None = None, **options: Any
) -> tuple[Recorder, Destination]:
    recorder = Recorder()
    destination = destination or Destination()
    manager.subscribe(recorder)
    await manager.start(destination, **options)
    return recorder, destination


async def submitted(manager: JobManager, new: NewJob | None = None) -> Job:
    """A job written and confirmed, as a command whose reply exists; returns it once it left `waiting`."""
    ticket = await manager.enqueue(new or new_job(), None)
    await manager.confirm(ticket.job.id)
    for _ in range(500):
        job = await manager.store.get(ticket.job.id)
        assert job is not None
        if job.state.value not in ("waiting", "submitting"):
            return job
        await asyncio.sleep(0.01)
    raise AssertionError("the job never left the line")
