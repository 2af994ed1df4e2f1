import statistics
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bench.common import run_virtual
from bench.polling_runs import Options, Profile, run_jobs
from bot.emulator import Duration
from bot.polling import (
    GENERIC_PRIOR,
    PRIORS,
    QUEUE_SPEED_SAVE_SECONDS,
    AdaptivePolicy,
    FixedPolicy,
    Samples,
    prior_for,
)
from bot.settings import DEFAULT_MODEL
from storage.models import Job, JobOrigin, JobState, Timing
from storage.polling_memory import SQLitePollingMemory
from storage.sqlite import SQLiteJobStore

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def make_job(state: JobState, *, started: float | None = None, position: int | None = None) -> Job:
    return Job(
        id=1,
        model="m",
        prompt="p",
        aspect_ratio="1:1",
        seed=1,
        state=state,
        origin=JobOrigin(),
        created_at=T0,
        updated_at=T0,
        queued_at=T0,
        started_at=T0 + timedelta(seconds=started) if started is not None else None,
        queue_position=position,
    )


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def blank(**options: float | None) -> AdaptivePolicy:
    """A policy whose one-point priors the first learned timing replaces: it knows only what a test teaches it."""
    options.setdefault("seconds_per_position", None)  # nothing shipped
    return AdaptivePolicy(queue=Samples([1.0]), run=Samples([8.0]), **options)  # type: ignore[arg-type]


def test_samples_interpolate_cdf_and_quantiles() -> None:
    samples = Samples([1.0, 2.0, 3.0, 4.0, 5.0])
    assert samples.cdf(0.5) == 0.0
    assert samples.cdf(3.0) == pytest.approx(0.5)
    assert samples.cdf(9.0) == 1.0
    assert samples.quantile(0.5) == pytest.approx(3.0)
    assert samples.quantile(0.125) == pytest.approx(1.5)
    assert samples.mean_between(1.0, 3.5) == pytest.approx(2.5)
    assert samples.mean_between(5.0, 9.0) is None


def test_first_real_sample_replaces_the_prior_and_window_is_bounded() -> None:
    samples = Samples([100.0], size=3)
    for value in (1.0, 2.0, 3.0, 4.0):
        samples.add(value)
    assert samples.learned == 3
    assert samples.quantile(0.0) == 2.0
    assert samples.quantile(1.0) == 4.0


def test_learned_samples_replace_the_prior_one_by_one_keeping_its_shape() -> None:
    prior = [float(v) for v in range(10, 110, 10)]  # 10 points: 10..100 s
    samples = Samples(prior)
    assert samples.median() == pytest.approx(55.0)
    samples.add(30.0)  # one real sample: nine prior points are left, still spread over 10..100
    assert samples.learned == 1
    assert samples.quantile(1.0) == pytest.approx(95.0)  # the prior's top quantile at nine points
    assert 30.0 < samples.median() < 55.0  # the prior still outweighs one sample nine to one
    for value in (40.0, 50.0, 60.0, 30.0, 40.0, 50.0, 60.0, 45.0):
        samples.add(value)
        assert samples.blending
    samples.add(55.0)
    assert not samples.blending  # ten real samples: the prior is gone
    assert (samples.quantile(0.0), samples.quantile(1.0)) == (30.0, 60.0)


def test_a_prior_the_samples_plainly_contradict_yields_at_once() -> None:
    samples = Samples([float(v) for v in range(10, 110, 10)])
    samples.add(1.0)
    samples.add(2.0)
    assert samples.blending  # two surprises in a row happen by chance (4 %)
    samples.add(1.5)
    assert not samples.blending  # three do not (0.8 %): only what was learned counts now
    assert samples.quantile(1.0) == 2.0


def test_known_models_start_from_their_prior_and_others_from_a_guess() -> None:
    shipped = PRIORS[DEFAULT_MODEL]
    for policy in (AdaptivePolicy(), AdaptivePolicy.for_model(DEFAULT_MODEL)):
        assert policy.run.median() == pytest.approx(statistics.median(shipped.run))
        assert policy.queue.median() == pytest.approx(statistics.median(shipped.queue))
        assert policy.seconds_per_position == shipped.seconds_per_position
    other = AdaptivePolicy.for_model("someone/else/text-to-image", min_interval=0.5)
    assert prior_for("someone/else/text-to-image") is GENERIC_PRIOR
    assert other.run.median() == pytest.approx(statistics.median(GENERIC_PRIOR.run))
    assert (other.seconds_per_position, other.min_interval) == (None, 0.5)


def test_the_first_job_is_polled_from_the_prior_without_a_blind_spot() -> None:
    """Before anything is learned, polls bunch around the prior's usual run time, as a trained policy's do."""
    policy = AdaptivePolicy.for_model(DEFAULT_MODEL)
    run = PRIORS[DEFAULT_MODEL].run
    job = make_job(JobState.IN_PROGRESS, started=0.0)
    assert policy.delay(job, T0) > 0.5 * run[0]  # nothing finishes this early: wait most of the way
    assert policy.delay(job, at(statistics.median(run))) < 1.0  # around the usual finish, look often


def test_the_queue_speed_goes_out_to_be_saved_when_it_is_worth_a_write() -> None:
    policy = blank(min_interval=0.1, max_interval=30)
    assert policy.queue_speed_to_save(T0) is None  # nothing learned, nothing to save
    policy.observe_position(1, 20, T0)
    policy.observe_position(1, 18, at(4))
    assert policy.queue_speed_to_save(at(4)) == pytest.approx(2.0)  # new
    assert policy.queue_speed_to_save(at(4)) is None  # already saved
    policy.observe_position(1, 17, at(6.1))  # 2.1 s for this position: the speed moves by 1.5 %
    assert policy.queue_speed_to_save(at(6.1)) is None
    later = at(4 + QUEUE_SPEED_SAVE_SECONDS)
    assert policy.queue_speed_to_save(later) == pytest.approx(2.03)  # small, but a minute old
    policy.observe_position(1, 16, at(16.1))  # 10 s for one position: the queue slowed down
    slower = policy.queue_speed_to_save(at(16.1))
    assert slower == pytest.approx(0.7 * 2.03 + 0.3 * 10)  # moved by more than 10 %: saved at once
    policy.observe_position(1, 15, at(16.1 + 4.5))
    assert policy.queue_speed_to_save(at(20.6)) is None  # 0.5 % off what was saved
    assert policy.queue_speed_to_save(at(20.6), final=True) == policy.seconds_per_position  # a clean stop


def test_a_shipped_queue_speed_yields_to_the_first_measured_one_a_recalled_one_is_averaged() -> None:
    guessed = blank(min_interval=0.1, max_interval=30, seconds_per_position=5.0)
    guessed.observe_position(1, 20, T0)
    guessed.observe_position(1, 18, at(4))
    assert guessed.seconds_per_position == pytest.approx(2.0)  # measured here: the guess is gone
    recalled = blank(min_interval=0.1, max_interval=30)
    recalled.recall_queue_speed(5.0)  # measured by the last process on this queue: one rate only corrects it
    recalled.observe_position(1, 20, T0)
    recalled.observe_position(1, 18, at(4))
    assert recalled.seconds_per_position == pytest.approx(0.7 * 5.0 + 0.3 * 2.0)


def test_a_recalled_queue_speed_is_used_and_not_saved_again() -> None:
    policy = blank(min_interval=0.1, max_interval=30)
    policy.recall_queue_speed(2.0)
    assert policy.seconds_per_position == 2.0
    assert policy.queue_speed_to_save(T0, final=True) is None
    policy.observe_position(1, 11, T0)
    assert policy.delay(make_job(JobState.IN_QUEUE, position=11), at(1)) == pytest.approx(0.6 * (11 * 2.0 - 1))
    policy.recall_queue_speed(None)  # nothing saved: keep what it has
    assert policy.seconds_per_position == 2.0


def test_polls_cluster_around_the_learned_run_time() -> None:
    policy = blank(min_interval=0.1, max_interval=10)
    for run in (7.5, 8.0, 8.0, 8.5, 9.0, 7.0, 8.2, 7.8):
        policy.learn(Timing(queue_seconds=1.0, run_seconds=run))
    job = make_job(JobState.IN_PROGRESS, started=0.0)
    early = policy.delay(job, at(0.5))
    near = policy.delay(job, at(8.0))
    assert early > 5.0  # nothing finishes in the first seconds: wait most of the way
    assert near < 0.6  # around the usual finish, look often


def test_run_clock_moves_on_by_our_own_detection_lag() -> None:
    """Learned run times end when a finish was noticed, so polls aim that much earlier."""
    policy = blank(min_interval=0.1, max_interval=10, catch=0.15)
    for run in range(1, 11):
        policy.learn(Timing(queue_seconds=0.0, run_seconds=float(run)))
    assert policy.detection_lag == 0.0
    first = policy.delay(make_job(JobState.IN_PROGRESS, started=0.0), T0)
    assert first == pytest.approx(2.35)  # the 15th percentile of 1..10 s
    assert policy.detection_lag == pytest.approx(2.35 - 1.5)  # finishes at 1 and 2 s are noticed at 2.35 s

    fresh = AdaptivePolicy(min_interval=0.1, max_interval=10, catch=0.15, run=policy.run)
    later = make_job(JobState.IN_PROGRESS, started=0.0)
    assert policy.delay(later, at(5.0)) == pytest.approx(fresh.delay(later, at(5.0 + 0.85)))


def test_past_everything_seen_gaps_grow_with_elapsed_time() -> None:
    policy = blank(min_interval=0.1, max_interval=10)
    policy.learn(Timing(queue_seconds=1.0, run_seconds=5.0))
    job = make_job(JobState.IN_PROGRESS, started=0.0)
    assert policy.delay(job, at(20)) == pytest.approx(policy.catch * 20 / (1 - policy.catch))
    assert policy.delay(job, at(200)) == 10  # capped


def test_first_look_after_submit_follows_learned_queue_waits() -> None:
    policy = blank(min_interval=0.1, max_interval=30)
    for wait in (10.0, 20.0, 30.0):
        policy.learn(Timing(queue_seconds=wait, run_seconds=6.0))
    assert policy.delay(make_job(JobState.IN_QUEUE), T0) == pytest.approx(16.0)  # 30th percentile of 10..30 s


def test_first_look_comes_late_when_queue_waits_vary_little_next_to_run_times() -> None:
    """Knowing the start hardly sharpens the finish then: one look that finds most jobs running is enough."""
    policy = blank(min_interval=0.1, max_interval=30)
    for wait, run in ((1.0, 4.0), (1.5, 8.0), (2.0, 14.0)):
        policy.learn(Timing(queue_seconds=wait, run_seconds=run))
    assert policy.delay(make_job(JobState.IN_QUEUE), T0) == pytest.approx(1.8)  # 80th percentile of 1..2 s


def test_queue_speed_is_learned_from_positions_counting_down() -> None:
    policy = blank(min_interval=0.1, max_interval=30)
    policy.observe_position(1, 20, T0)
    policy.observe_position(1, 18, at(4))
    assert policy.seconds_per_position == pytest.approx(2.0)


def test_deep_queue_looks_again_part_of_the_way_to_the_start() -> None:
    policy = AdaptivePolicy(min_interval=0.1, max_interval=30, seconds_per_position=2.0)
    policy.observe_position(1, 11, T0)
    assert policy.delay(make_job(JobState.IN_QUEUE, position=11), at(1)) == pytest.approx(0.6 * (11 * 2.0 - 1))
    policy.observe_position(1, 2, at(10))
    spp = policy.seconds_per_position
    assert spp is not None
    # Near the head of the queue: look when it can have started, just after 2 positions' time.
    assert policy.delay(make_job(JobState.IN_QUEUE, position=2), at(10)) == pytest.approx(2.05 * spp)


def test_delay_stays_within_the_configured_bounds() -> None:
    def trained() -> AdaptivePolicy:
        policy = blank(min_interval=0.5, max_interval=3)
        for run in (8.0, 8.0, 8.0, 8.0):
            policy.learn(Timing(queue_seconds=1.0, run_seconds=run))
        return policy

    job = make_job(JobState.IN_PROGRESS, started=0.0)
    assert trained().delay(job, T0) == 3
    assert trained().delay(job, at(7.99)) == 0.5


def test_expected_finish_needs_enough_history() -> None:
    policy = blank()
    job = make_job(JobState.IN_PROGRESS, started=0.0)
    assert policy.expected_finish(job) is None
    for run in (6.0, 8.0, 10.0):
        policy.learn(Timing(queue_seconds=0.0, run_seconds=run))
    assert policy.expected_finish(job) == T0 + timedelta(seconds=8.0)


def test_fixed_policy_is_fixed() -> None:
    policy = FixedPolicy(2.0)
    assert policy.delay(make_job(JobState.IN_QUEUE), T0) == 2.0
    assert policy.expected_finish(make_job(JobState.IN_PROGRESS, started=0)) is None
    policy.recall_queue_speed(2.0)
    assert policy.queue_speed_to_save(T0, final=True) is None


def test_polling_benchmark_harness_still_runs(tmp_path: Path) -> None:
    """bench/polling_runs.py drives the real manager, client and store: a three-job smoke run, figures not judged."""
    profile = Profile("smoke", Duration.constant(0.5), Duration.constant(2.0), 1.0)
    opts = Options(jobs=3, train=0, seed=1, gap=0.5, budget=1000.0, rate_429=0.0, workdir=tmp_path, tuning={})
    outcome = run_virtual(lambda: run_jobs(profile, "fixed 1 s", opts, seed=1, db=tmp_path / "j.sqlite3", count=3), 50)
    assert len(outcome.delays) == 3
    assert outcome.calls["submit"] == 3
    assert all(delay >= 0 for delay in outcome.delays)
    assert [calls for _, calls in outcome.per_job] == [4] * 3  # a submit, looks at 1, 2 and 3 s (done at 2.5 s)


def test_the_queue_speed_survives_a_restart(tmp_path: Path) -> None:
    """The wiring the job manager gets: recall at start, save on stop, through the real store (bench.polling_runs)."""
    profile = Profile("queue", Duration.constant(8.0), Duration.constant(1.0), 2.0)  # 4 positions, 2 s each
    opts = Options(jobs=3, train=0, seed=1, gap=0.5, budget=1000.0, rate_429=0.0, workdir=tmp_path, tuning={})
    db = tmp_path / "j.sqlite3"
    run_virtual(lambda: run_jobs(profile, "ours", opts, seed=1, db=db, count=3), 50)

    async def saved() -> float | None:
        async with await SQLiteJobStore.open(db) as store:
            memory = SQLitePollingMemory(store._db, store.path)
            speed = await memory.queue_speed(DEFAULT_MODEL)
        return speed.seconds_per_position if speed else None

    first = run_virtual(saved, 50)
    assert first is not None
    assert 1.0 < first < 4.0  # learned from the countdowns

    restarted = AdaptivePolicy.for_model(DEFAULT_MODEL)
    no_queue = Profile("no queue", Duration.constant(0.0), Duration.constant(1.0), 2.0)  # nothing to learn from
    run_virtual(lambda: run_jobs(no_queue, "ours", opts, seed=2, db=db, count=1, policy=restarted), 50)
    assert restarted.seconds_per_position == first  # recalled at start, not the prior
