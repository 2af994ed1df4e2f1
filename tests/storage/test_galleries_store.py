"""Issue 16 in the store: several images per job, an edit's input image, a server's models.

Every test runs against SQLite and PostgreSQL (tests/storage/conftest.py).
"""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from storage.base import JobNotFoundError
from storage.models import JobInput, JobOrigin, JobState, NewJob, StoredInput
from storage.open import AnyJobStore
from tests.storage.peek import stored_images

NOW = datetime(2025, 6, 30, 15, 30, tzinfo=UTC)
GUILD, ALICE = 2**62, 11
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8
TINY = JobInput("image/png", 1, 1, PNG)
AGO = NOW - timedelta(days=100)


def gallery(
    count: int, *, cost: float | None = None, image: StoredInput | None = None, parent: int | None = None
) -> NewJob:
    origin = JobOrigin(guild_id=GUILD, channel_id=5, user_id=ALICE)
    return NewJob(
        "google/nano-banana-2/edit" if image else "m",
        "a prompt",
        "1:1",
        1,
        origin,
        count=count,
        cost_usd=cost,
        input_url="https://cdn.example/a.png?ex=1" if image else None,
        input_expires_at=NOW + timedelta(hours=24) if image else None,
        input=image,
        parent_id=parent,
    )


async def kept(store: AnyJobStore, image: JobInput, when: datetime = NOW) -> StoredInput:
    """The image stored as the bot stores a member's image once read, for a job to name."""
    return StoredInput(await store.inputs.add(image, now=when))


async def made(store: AnyJobStore, new: NewJob, when: datetime, *, cost: float | None = None) -> int:
    job = await store.create(new, now=when - timedelta(minutes=2))
    await store.transition(job.id, JobState.IN_QUEUE, expect=JobState.SUBMITTING, now=when, request_id=f"r{job.id}")
    fields: dict[str, Any] = {"result_url": "https://x/1.png", "result_urls": json.dumps(["https://x/1.png"])}
    if cost is not None:
        fields.update(cost_usd=cost, cost_estimated=False)
    await store.transition(job.id, JobState.COMPLETED, expect=JobState.IN_QUEUE, now=when, **fields)
    await store.transition(job.id, JobState.DELIVERED, expect=JobState.COMPLETED, now=when)
    return job.id


async def test_a_job_keeps_its_count_estimate_and_input(store: AnyJobStore) -> None:
    image = JobInput("image/png", 64, 32, PNG)
    job = await store.create(gallery(4, cost=0.28, image=await kept(store, image)), now=NOW)
    assert job.count == 4
    assert job.cost_usd == 0.28
    assert job.cost_estimated
    assert job.input_url == "https://cdn.example/a.png?ex=1"
    assert job.input_expires_at == NOW + timedelta(hours=24)
    assert await store.inputs.get(job.id) == image
    plain = await store.create(gallery(1), now=NOW)
    assert (plain.count, plain.cost_usd, plain.cost_estimated, plain.input_url) == (1, None, False, None)
    assert await store.inputs.get(plain.id) is None


async def test_an_edit_written_before_its_image_is_given_it_once_while_it_waits(store: AnyJobStore) -> None:
    # The bot writes an edit before downloading its image (no download fits in Discord's 3 seconds).
    waiting = await store.create(
        dataclasses.replace(gallery(1), input_url="https://cdn.example/b.png"), now=NOW, state=JobState.WAITING
    )
    assert waiting.awaits_input
    image = JobInput("image/png", 3, 2, PNG)
    given = await store.give_input(waiting.id, await store.inputs.add(image, now=NOW), now=NOW)
    assert given is not None
    assert not given.awaits_input
    assert await store.inputs.get(waiting.id) == image
    await store.transition(waiting.id, JobState.FAILED, expect=JobState.WAITING, now=NOW)
    late = await store.inputs.add(image, now=NOW)
    assert await store.give_input(waiting.id, late, now=NOW) is None  # it ended meanwhile: nothing changes
    assert await store.prune_inputs(before=NOW + timedelta(seconds=1)) == 1  # the late image, named by nobody


async def test_every_image_url_is_kept_in_order(store: AnyJobStore) -> None:
    job = await store.create(gallery(3), now=NOW)
    urls = ["https://x/1.png", "https://x/2.png", "https://x/3.png"]
    await store.transition(job.id, JobState.IN_QUEUE, expect=JobState.SUBMITTING, now=NOW, request_id="r")
    done = await store.transition(
        job.id, JobState.COMPLETED, expect=JobState.IN_QUEUE, now=NOW, result_url=urls[0], result_urls=json.dumps(urls)
    )
    assert done is not None
    assert done.images == tuple(urls)


async def test_quotas_and_the_budget_count_images_not_jobs(store: AnyJobStore) -> None:
    await store.create(gallery(4, cost=0.28), now=NOW)
    await store.create(gallery(1, cost=0.03), now=NOW)
    used = await store.billable_since(ALICE, GUILD, NOW - timedelta(hours=1))
    assert len(used) == 5
    today, month = await store.spend(day=NOW - timedelta(hours=1), month=NOW - timedelta(days=3))
    assert (today.images, month.images) == (5, 5)
    assert round(today.cost_usd, 6) == 0.31
    assert today.unpriced == 0


async def test_usage_counts_images_before_and_after_a_prune(store: AnyJobStore) -> None:
    await made(store, gallery(4), NOW - timedelta(days=100), cost=0.28)
    await made(store, gallery(2), NOW - timedelta(days=100))
    await made(store, gallery(1), NOW - timedelta(days=99), cost=0.03)
    since = NOW - timedelta(days=120)
    before = await store.usage(GUILD, since)
    assert (before.images, before.unpriced) == (7, 2)
    assert await store.prune(before=NOW - timedelta(days=90)) == 3
    after = await store.usage(GUILD, since)
    assert (after.images, after.unpriced, round(after.cost_usd, 6)) == (7, 2, 0.31)
    _, month = await store.spend(day=NOW, month=NOW - timedelta(days=120))
    assert month.images == 7


async def test_an_input_goes_with_its_job(store: AnyJobStore) -> None:
    job_id = await made(store, gallery(1, image=await kept(store, TINY, AGO)), AGO)
    assert await stored_images(store) == 1
    await store.prune(before=NOW - timedelta(days=90))
    assert await store.inputs.get(job_id) is None
    assert await stored_images(store) == 0  # the image itself, not only the job naming it


async def test_rerolls_share_their_sources_image_until_the_last_of_them_goes(store: AnyJobStore) -> None:
    image = JobInput("image/png", 64, 32, PNG)
    source_id = await made(store, gallery(1, image=await kept(store, image, AGO)), AGO)
    source = await store.get(source_id)
    assert source is not None
    assert source.input_image_id is not None
    shared = StoredInput(source.input_image_id)
    rerolls = [await made(store, gallery(1, image=shared, parent=source_id), NOW - timedelta(days=d)) for d in (95, 1)]
    assert await stored_images(store) == 1
    assert [await store.inputs.get(job_id) for job_id in rerolls] == [image, image]
    assert await store.prune(before=NOW - timedelta(days=90)) == 2  # the source and the first reroll
    assert await store.inputs.get(rerolls[1]) == image  # the newest still shows (and rerolls) what it started from
    assert await stored_images(store) == 1
    assert await store.prune(before=NOW) == 1
    assert await stored_images(store) == 0


async def test_a_reroll_of_a_job_retention_took_is_not_written(store: AnyJobStore) -> None:
    source_id = await made(store, gallery(1, image=await kept(store, TINY, AGO)), AGO)
    source = await store.get(source_id)
    assert source is not None
    assert source.input_image_id is not None
    await store.prune(before=NOW - timedelta(days=90))  # between the reroll's click and its write
    with pytest.raises(JobNotFoundError):
        await store.create(gallery(1, image=StoredInput(source.input_image_id), parent=source_id), now=NOW)
    assert await store.jobs_for_user(ALICE) == []


async def test_images_no_job_names_are_swept_without_pruning_a_job(store: AnyJobStore) -> None:
    # An edit that ended while its image was read leaves one; the bot sweeps them even when it keeps every job
    # (JOB_RETENTION_DAYS=0), and a prune of old jobs sweeps them too.
    old_id = await made(store, gallery(1, image=await kept(store, TINY, AGO)), AGO)
    await store.inputs.add(TINY, now=NOW)
    assert await store.prune_inputs(before=NOW) == 0  # younger than the cut: its job may still be on its way
    assert await store.prune_inputs(before=NOW + timedelta(seconds=1)) == 1
    assert await store.get(old_id) is not None
    assert await store.inputs.get(old_id) is not None
    await store.inputs.add(TINY, now=NOW)
    await store.prune(before=NOW + timedelta(seconds=1))
    assert await stored_images(store) == 0


async def test_a_server_keeps_its_models_and_default(store: AnyJobStore) -> None:
    settings = await store.guilds.get(GUILD)
    assert (settings.allowed_models, settings.default_model) == (None, None)
    await store.guilds.update(GUILD, now=NOW, allowed_models="a/b c/d", default_model="c/d")
    settings = await store.guilds.get(GUILD)
    assert (settings.allowed_models, settings.default_model) == ("a/b c/d", "c/d")
    await store.guilds.update(GUILD, now=NOW, allowed_models=None, default_model=None)
    assert (await store.guilds.get(GUILD)).allowed_models is None
