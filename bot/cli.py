"""`python -m bot generate`: one image from the terminal, through the same job manager and store.

Exit status 0 on success, 2 on invalid input, 1 on an upstream failure; one
clear line on stderr for each failure, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from pydantic import SecretStr
from rich.console import Console

from bot.download import DownloadedImage, open_session
from bot.emulator import Emulator
from bot.images import ImageWorkers
from bot.jobs import CancelOutcome, Delivered, Gone, JobManager, RecoveredReply, Reply
from bot.jobs.delivery import Outcome
from bot.jobs.events import JobCancelled, JobDelivered, JobEvent, JobFailed, JobQueued, JobRunning, JobUndeliverable
from bot.jobs.orders import order
from bot.model_registry import Choices, ModelRegistry, check_choices, find, load_registry
from bot.model_spec import NO_SEED, RATIO_VALUES, SEED_MAX, InvalidInputError, check_ratio, check_seed, clean_prompt
from bot.runcomfy import RunComfyClient
from bot.settings import Settings
from storage.models import Job, JobOrigin, JobState, NewJob
from storage.open import open_request_budget, open_store

EXIT_OK = 0
EXIT_UPSTREAM = 1
EXIT_INVALID = 2


class UsageError(Exception):
    """Invalid command-line input; exit status 2."""


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("prompt", help="what the image should show")
    parser.add_argument(
        "--aspect-ratio", help=f"one of {', '.join(RATIO_VALUES)}, where the model takes it (default: the model's)"
    )
    parser.add_argument("--seed", help="0..2147483647; random when omitted (printed, so you can reproduce it)")
    parser.add_argument(
        "--model", help="a text-to-image model by id or name (default: RUNCOMFY_MODEL; docs/models.md lists them)"
    )
    parser.add_argument("--count", type=int, help="how many images, where the model makes several (1 to 4)")
    parser.add_argument("--output", type=Path, help="where to save the image (default: imagine-<job id>.<type>)")
    parser.add_argument("--emulator", action="store_true", help="use a built-in RunComfy emulator: no token, no cost")


def parse_inputs(args: argparse.Namespace, registry: ModelRegistry) -> NewJob:
    """The job the command asks for, every option checked against its model before anything is spent."""
    try:
        prompt = clean_prompt(args.prompt)
        model = registry.default if args.model is None else find(registry, args.model)
        if model is None:
            known = ", ".join(model.name for model in registry if not model.edits)
            raise InvalidInputError("model", f"I don't know a model called '{args.model}'. Text-to-image: {known}.")
        if model.edits:
            raise InvalidInputError("model", f"{model.name} edits an image; here, pick a text-to-image model.")
        ratio = None if args.aspect_ratio is None else check_ratio(args.aspect_ratio)
        seed: int | None = None
        if args.seed is not None:
            try:
                seed = check_seed(int(args.seed))
            except ValueError:
                raise InvalidInputError("seed", f"The seed must be a whole number from 0 to {SEED_MAX:,}.") from None
        check_choices(model, Choices(ratio=ratio, seed=seed, count=args.count, prompt=prompt))
    except InvalidInputError as error:
        flag = "--aspect-ratio" if error.option == "aspect_ratio" else f"--{error.option}"
        if error.option == "prompt":
            flag = "PROMPT"
        raise UsageError(f"{flag}: {error}") from None
    return order(model, prompt=prompt, ratio=ratio, seed=seed, count=args.count or 1, origin=JobOrigin())


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

    def stop(self) -> None:
        """End the live display early (before a last message of its own); later lines simply print."""
        self.__exit__()
        self.status = None

    def show(self, text: str) -> None:
        if self.status is not None:
            self.status.update(text)
        else:
            self.console.print(text, highlight=False)


@contextlib.asynccontextmanager
async def _runcomfy(
    settings: Settings, use_emulator: bool, registry: ModelRegistry
) -> AsyncIterator[tuple[Settings, SecretStr]]:
    """The settings and token to talk with: the real API, or a private emulator (speaking `registry`'s models)."""
    if not use_emulator:
        yield settings, settings.require("RUNCOMFY_API_TOKEN")
        return
    async with Emulator(registry=registry) as emulator:
        yield settings.model_copy(update={"runcomfy_base_url": emulator.url}), SecretStr(emulator.token)


def check_output(output: Path | None) -> None:
    """Refuse an --output the image could not be written to, before anything is sent (and paid for)."""
    if output is None:
        return
    if output.is_dir():
        raise UsageError(f"--output: {output} is a folder; name a file in it, e.g. {output / 'image.png'}")
    folder = output.parent.resolve()
    existing = next((path for path in (folder, *folder.parents) if path.exists()), None)
    if existing is None or not existing.is_dir():
        raise UsageError(f"--output: cannot create {output}: {existing or folder} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"--output: cannot write to {existing} (permission denied); choose another place")


class FileDestination:
    """The CLI's destination: the image goes to a file. Its jobs have no channel, so no notices are owed.

    Should writing fail after all (a full disk, a folder removed meanwhile), the
    paid-for image is kept under the data folder instead, and the command says
    where.
    """

    def __init__(self, output: Path | None, keep_in: Path) -> None:
        self.output = output
        self.keep_in = keep_in
        self.saved: list[Path] = []  # where each image went, in order
        self.image: DownloadedImage | None = None  # the first one
        self.problem: str | None = None  # why the image is not where it was asked to be

    async def deliver_images(self, job: Job, images: Sequence[DownloadedImage]) -> Outcome:
        """The first image where it was asked to be; any further ones beside it, numbered (`fox-2.png`)."""
        outcome: Outcome = Gone("no image")
        for number, image in enumerate(images, start=1):
            outcome = await self._save(job, image, number)
            if not isinstance(outcome, Delivered):
                break
        return outcome

    async def _save(self, job: Job, image: DownloadedImage, number: int) -> Outcome:
        path = self.output or Path(f"imagine-{job.id}.{image.extension}")
        if number > 1:
            path = path.with_name(f"{path.stem}-{number}{path.suffix}")
        try:
            _write(path, image.data)
        except OSError as error:
            kept = self.keep_in / f"imagine-{job.id}.{image.extension}"
            try:
                _write(kept, image.data)
            except OSError as second:
                return Gone(f"could not write {path} ({error.strerror or error}) nor {kept} ({second.strerror})")
            self.problem = f"could not write {path} ({error.strerror or error}); the image is kept at {kept}"
            path = kept
        self.saved.append(path)
        if number == 1:
            self.image = image
        return Delivered("file")

    async def deliver_notice(self, job: Job) -> Outcome:
        return Gone("the command line has no place for notices")

    async def recover_reply(self, job: Job) -> RecoveredReply:
        return RecoveredReply(Reply.NEVER)


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


async def generate(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    registry = load_registry(settings.runcomfy_model, settings.runcomfy_models_file)
    new = parse_inputs(args, registry)
    check_output(args.output)
    async with (
        _runcomfy(settings, args.emulator, registry) as (settings, token),
        open_session(settings) as session,
        await open_store(database_url=settings.postgres_url, database_path=settings.database_path) as store,
    ):
        limiter = await open_request_budget(store, settings.runcomfy_requests_per_second)
        workers = ImageWorkers.from_settings(settings)
        client = RunComfyClient.from_settings(session, settings, token=token, limiter=limiter, image_workers=workers)
        manager = JobManager.from_settings(client, store, settings)
        destination = FileDestination(args.output, settings.database_path.parent / "images")
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
                ticket = await manager.enqueue(new, None)
                job_ids.add(ticket.job.id)
                await manager.confirm(ticket.job.id)
                try:
                    event = await done
                except asyncio.CancelledError:  # Ctrl-C: say what became of the job, then stop
                    progress.stop()
                    await _interrupted(manager, ticket.job.id, console)
                    raise
            finally:
                await manager.stop()
                workers.close()
    return _report(event, destination, registry.name(new.model), console)


async def _interrupted(manager: JobManager, job_id: int, console: Console) -> None:
    """The member at the terminal pressed Ctrl-C: a job RunComfy has is cancelled there while it still can be;
    either way they learn its request id and whether it will be billed."""
    job = await manager.store.get(job_id)
    if job is None:
        return
    request = f"RunComfy request id {job.request_id}" if job.request_id else "no RunComfy request id yet"
    if job.state is JobState.IN_QUEUE:
        outcome = await manager.cancel(job.id)
        if outcome is CancelOutcome.CANCELLED:
            verdict = "it was still queued, so it was cancelled there: nothing is billed"
        else:
            verdict = "RunComfy had already started it: it will finish and be billed, and is not saved"
    elif job.state is JobState.IN_PROGRESS:
        verdict = "RunComfy is already generating it: it will finish and be billed, and is not saved"
    elif job.state is JobState.SUBMITTING:
        verdict = "it was being sent: if RunComfy took it, it will be billed; it was not sent again"
    elif job.state is JobState.WAITING:
        await manager.cancel(job.id)
        verdict = "it had not been sent: nothing is billed"
    else:
        verdict = f"it had already ended ({job.state.value})"
    console.print(f"interrupted: job {job.id}, {request}: {verdict}.", highlight=False, markup=False, soft_wrap=True)


def _report(event: JobEvent, destination: FileDestination, model_name: str, console: Console) -> int:
    """One line per outcome: where the images are, or why there are none (RunComfy's words and the setting)."""
    if isinstance(event, JobDelivered) and destination.saved and destination.image is not None:
        image, paths = destination.image, destination.saved
        facts = [model_name, f"{image.width}×{image.height}"]
        if event.job.seed != NO_SEED:
            facts.append(f"seed {event.job.seed}")
        names = [str(path) for path in paths]
        where = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
        console.print(f"Saved {where} ({', '.join(facts)})", highlight=False)
        for path in paths:
            print(path)  # noqa: T201 - stdout carries the result for scripts, a path a line
        console.print(f"request id: {event.job.request_id}", highlight=False)
        if destination.problem is not None:
            console.print(f"error: {destination.problem}", highlight=False, markup=False, soft_wrap=True)
            return EXIT_UPSTREAM
        return EXIT_OK
    if isinstance(event, JobFailed):
        reason = event.detail or event.reason
    elif isinstance(event, JobUndeliverable):
        reason = event.reason
    else:
        reason = "The job was cancelled."
    console.print(f"error: {reason}", highlight=False, markup=False, soft_wrap=True)
    return EXIT_UPSTREAM
