"""`python -m bot generate`: one image from the terminal, through the same job manager and store.

Exit status 0 on success, 2 on invalid input, 1 on an upstream failure; one
clear line on stderr for each failure, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from aiolimiter import AsyncLimiter
from pydantic import SecretStr
from rich.console import Console

from bot.download import DownloadedImage, open_session
from bot.emulator import Emulator
from bot.images import ImageWorkers
from bot.jobs import Delivered, Gone, JobManager, RecoveredReply, Reply
from bot.jobs.delivery import Outcome
from bot.jobs.events import JobCancelled, JobDelivered, JobEvent, JobFailed, JobQueued, JobRunning, JobUndeliverable
from bot.model_spec import RATIO_VALUES, InvalidInputError, check_ratio, check_seed, clean_prompt
from bot.runcomfy import RunComfyClient
from bot.settings import Settings
from storage.models import Job, NewJob
from storage.sqlite import SQLiteJobStore

EXIT_OK = 0
EXIT_UPSTREAM = 1
EXIT_INVALID = 2


class UsageError(Exception):
    """Invalid command-line input; exit status 2."""


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("prompt", help="what the image should show")
    parser.add_argument("--aspect-ratio", default="1:1", help=f"one of {', '.join(RATIO_VALUES)} (default 1:1)")
    parser.add_argument("--seed", help="0..2147483647; random when omitted (printed, so you can reproduce it)")
    parser.add_argument("--output", type=Path, help="where to save the image (default: imagine-<job id>.<type>)")
    parser.add_argument("--emulator", action="store_true", help="use a built-in RunComfy emulator: no token, no cost")


def parse_inputs(args: argparse.Namespace) -> tuple[str, str, int]:
    """Check the prompt, ratio and seed before anything is spent."""
    try:
        prompt = clean_prompt(args.prompt)
        ratio = check_ratio(args.aspect_ratio)
        if args.seed is None:
            seed = check_seed(None)
        else:
            try:
                seed = int(args.seed)
            except ValueError:
                raise InvalidInputError("seed", "The seed must be a whole number from 0 to 2,147,483,647.") from None
            seed = check_seed(seed)
    except InvalidInputError as error:
        flag = "--aspect-ratio" if error.option == "aspect_ratio" else f"--{error.option}"
        if error.option == "prompt":
            flag = "PROMPT"
        raise UsageError(f"{flag}: {error}") from None
    return prompt, ratio, seed


class Progress:
    """Shows where the job is: a live spinner on a terminal, one line per change otherwise."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.status = console.status("Submitting…") if console.is_terminal else None

    def __enter__(self) -> Progress:
        if self.status is not None:
            self.status.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.status is not None:
            self.status.__exit__(None, None, None)

    def show(self, text: str) -> None:
        if self.status is not None:
            self.status.update(text)
        else:
            self.console.print(text, highlight=False)


@contextlib.asynccontextmanager
async def _runcomfy(settings: Settings, use_emulator: bool) -> AsyncIterator[tuple[Settings, SecretStr]]:
    """The settings and token to talk with: the real API, or a private emulator started here."""
    if not use_emulator:
        yield settings, settings.require("RUNCOMFY_API_TOKEN")
        return
    async with Emulator() as emulator:
        yield settings.model_copy(update={"runcomfy_base_url": emulator.url}), SecretStr(emulator.token)


class FileDestination:
    """The CLI's destination: the image goes to a file. Its jobs have no channel, so no notices are owed."""

    def __init__(self, output: Path | None) -> None:
        self.output = output
        self.saved: Path | None = None
        self.image: DownloadedImage | None = None

    async def deliver_image(self, job: Job, image: DownloadedImage) -> Outcome:
        path = self.output or Path(f"imagine-{job.id}.{image.extension}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(image.data)
        except OSError as error:
            return Gone(f"could not write {path}: {error.strerror or error}")
        self.saved, self.image = path, image
        return Delivered("file")

    async def deliver_notice(self, job: Job) -> Outcome:
        return Gone("the command line has no place for notices")

    async def recover_reply(self, job: Job) -> RecoveredReply:
        return RecoveredReply(Reply.NEVER)


async def generate(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    prompt, ratio, seed = parse_inputs(args)
    async with (
        _runcomfy(settings, args.emulator) as (settings, token),
        open_session(settings) as session,
        await SQLiteJobStore.open(settings.database_path) as store,
    ):
        limiter = AsyncLimiter(settings.runcomfy_requests_per_second, 1.0)
        workers = ImageWorkers.from_settings(settings)
        client = RunComfyClient.from_settings(session, settings, token=token, limiter=limiter, image_workers=workers)
        manager = JobManager.from_settings(client, store, settings)
        destination = FileDestination(args.output)
        done: asyncio.Future[JobEvent] = asyncio.get_running_loop().create_future()
        loop = asyncio.get_running_loop()
        started = loop.time()
        job_ids: set[int] = set()

        with Progress(console) as progress:

            def on_event(event: JobEvent) -> None:
                if event.job.id not in job_ids:
                    return  # the bot may share this database; only this command's job matters here
                elapsed = loop.time() - started
                if isinstance(event, JobQueued):
                    where = f" · #{event.position}" if event.position else ""
                    progress.show(f"Queued{where} · {elapsed:.0f}s")
                elif isinstance(event, JobRunning):
                    progress.show(f"Generating · {elapsed:.0f}s")
                elif isinstance(event, JobDelivered | JobFailed | JobCancelled | JobUndeliverable) and not done.done():
                    done.set_result(event)

            manager.subscribe(on_event)
            await manager.start(destination, resume=lambda job: False)  # the bot resumes its own jobs
            try:
                new = NewJob(model=settings.runcomfy_model, prompt=prompt, aspect_ratio=ratio, seed=seed)
                job = await manager.enqueue(new, None)
                job_ids.add(job.job.id)
                await manager.confirm(job.job.id)
                event = await done
            finally:
                await manager.stop()
                workers.close()

        if isinstance(event, JobDelivered) and destination.saved is not None and destination.image is not None:
            image = destination.image
            path = destination.saved
            console.print(f"Saved {path} ({image.width}×{image.height}, seed {seed})", highlight=False)
            print(path)  # noqa: T201 - stdout carries the result for scripts
            console.print(f"request id: {event.job.request_id}", highlight=False)
            return EXIT_OK
        reason = event.reason if isinstance(event, JobFailed | JobUndeliverable) else "The job was cancelled."
        console.print(f"error: {reason}", highlight=False, markup=False)
        return EXIT_UPSTREAM
