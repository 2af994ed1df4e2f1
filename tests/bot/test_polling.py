from datetime import UTC, datetime, timedelta

import pytest

from bot.polling import AdaptivePolicy, FixedPolicy, Samples
from storage.models import Job, JobOrigin, JobState, Timing

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


def test_samples_interpolate_cdf_and_quantiles() -> None:
    samples = Samples([1.0, 2.0, 3.0, 4.0, 5.0])
    assert samples.cdf(0.5) == 0.0
    assert samples.cdf(3.0) == pytest.approx(0.5)
    assert samples.cdf(9.0) == 1.0
    assert samples.quantile(0.5) == pytest.approx(3.0)
    assert samples.quantile(0.125) == pytest.approx(1.5)


def test_first_real_sample_replaces_the_prior_and_window_is_bounded() -> None:
    samples = Samples([100.0], size=3)
    for value in (1.0, 2.0, 3.0, 4.0):
        samples.add(value)
    assert samples.learned == 3
    assert samples.quantile(0.0) == 2.0
    assert samples.quantile(1.0) == 4.0


def test_polls_cluster_around_the_learned_run_time() -> None:
    policy = AdaptivePolicy(min_interval=0.1, max_interval=10)
    for run in (7.5, 8.0, 8.0, 8.5, 9.0, 7.0, 8.2, 7.8):
        policy.learn(Timing(queue_seconds=1.0, run_seconds=run))
    early = policy.delay(make_job(JobState.IN_PROGRESS, started=0.0), T0 + timedelta(seconds=0.5))
    near = policy.delay(make_job(JobState.IN_PROGRESS, started=0.0), T0 + timedelta(seconds=8.0))
    assert early > 5.0  # nothing finishes in the first seconds: wait most of the way
    assert near < 0.6  # around the usual finish, look often


def test_tail_backs_off_in_proportion_to_elapsed_time() -> None:
    policy = AdaptivePolicy(min_interval=0.1, max_interval=10)
    policy.learn(Timing(queue_seconds=1.0, run_seconds=5.0))
    job = make_job(JobState.IN_PROGRESS, started=0.0)
    assert policy.delay(job, T0 + timedelta(seconds=20)) == pytest.approx(6.0)
    assert policy.delay(job, T0 + timedelta(seconds=200)) == 10  # capped


def test_deep_queue_waits_in_proportion_to_position() -> None:
    policy = AdaptivePolicy(min_interval=0.1, max_interval=30)
    policy.observe_position(1, 20, T0)
    policy.observe_position(1, 18, T0 + timedelta(seconds=4))
    assert policy.seconds_per_position == pytest.approx(2.0)
    assert policy.delay(make_job(JobState.IN_QUEUE, position=11), T0) == pytest.approx(0.35 * 10 * 2.0)


def test_expected_finish_needs_enough_history() -> None:
    policy = AdaptivePolicy()
    job = make_job(JobState.IN_PROGRESS, started=0.0)
    assert policy.expected_finish(job) is None
    for run in (6.0, 8.0, 10.0):
        policy.learn(Timing(queue_seconds=0.0, run_seconds=run))
    assert policy.expected_finish(job) == T0 + timedelta(seconds=8.0)


def test_fixed_policy_is_fixed() -> None:
    policy = FixedPolicy(2.0)
    assert policy.delay(make_job(JobState.IN_QUEUE), T0) == 2.0
    assert policy.expected_finish(make_job(JobState.IN_PROGRESS, started=0)) is None
