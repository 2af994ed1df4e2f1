"""`python -m bot generate` as a user runs it: a subprocess, its exit status, its one-line messages."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from PIL import Image

from bot.emulator import Duration, Emulator, EmulatorConfig

TOKEN = "rc-cli-SECRET-4d1e"


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    config = EmulatorConfig(queue_time=Duration.constant(0.1), run_time=Duration.constant(0.2))
    async with Emulator(config, token=TOKEN) as emu:
        yield emu


async def run_cli(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Run the CLI in a clean environment (no .env, a private database) and collect its output."""
    environment = {key: value for key, value in os.environ.items() if not key.startswith(("RUNCOMFY_", "DISCORD_"))}
    environment.update({"DATABASE_PATH": str(tmp_path / "db" / "imagine.sqlite3"), "COLUMNS": "200"})
    environment.update(env or {})
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "generate",
        *args,
        cwd=tmp_path,
        env=environment,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


async def test_emulator_run_writes_a_16_9_png(tmp_path: Path) -> None:
    code, out, err = await run_cli(
        tmp_path, "a red fox, watercolor", "--aspect-ratio", "16:9", "--seed", "7", "--emulator", "--output", "fox.png"
    )
    assert code == 0, err
    assert out.strip() == "fox.png"
    assert "request id:" in err
    assert "seed 7" in err
    with Image.open(tmp_path / "fox.png") as image:
        assert image.format == "PNG"
        assert image.width / image.height == pytest.approx(16 / 9, rel=0.02)
    assert (tmp_path / "db" / "imagine.sqlite3").exists()


async def test_seed_is_chosen_and_printed_when_omitted(tmp_path: Path) -> None:
    code, out, err = await run_cli(tmp_path, "a quiet harbour", "--emulator")
    assert code == 0, err
    assert "seed " in err
    saved = tmp_path / out.strip()
    assert saved.name.startswith("imagine-")
    assert saved.suffix == ".png"
    assert saved.exists()


async def test_another_model_makes_several_images_saved_side_by_side(tmp_path: Path) -> None:
    code, out, err = await run_cli(
        tmp_path, "two pears", "--model", "Nano Banana 2", "--count", "2", "--emulator", "--output", "pear.png"
    )
    assert code == 0, err
    assert out.split() == ["pear.png", "pear-2.png"]  # one path per line, for scripts
    for name in ("pear.png", "pear-2.png"):
        with Image.open(tmp_path / name) as image:
            assert image.format == "PNG"
    assert "Saved pear.png and pear-2.png (Nano Banana 2, " in err
    assert "seed" not in err  # the model takes none


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["a fox", "--aspect-ratio", "5:4"], ["--aspect-ratio", "16:9"]),
        (["a fox", "--seed", "-1"], ["--seed", "2,147,483,647"]),
        (["a fox", "--seed", "2147483648"], ["--seed"]),
        (["a fox", "--seed", "seven"], ["--seed", "whole number"]),
        (["   "], ["PROMPT", "empty"]),
        (["x" * 3000], ["PROMPT", "2,048"]),
        (["a fox", "--bogus"], ["--bogus"]),
        (["a fox", "--model", "acme/unknown"], ["--model", "acme/unknown", "Nano Banana 2"]),
        (["a fox", "--model", "google/nano-banana-2/edit"], ["--model", "edits an image"]),
        (["a fox", "--count", "2"], ["--count", "ImagineArt 1.5 makes one image"]),
        (["a fox", "--model", "Nano Banana 2", "--seed", "5"], ["--seed", "takes no seed"]),
        (["a fox", "--model", "Nano Banana 2", "--aspect-ratio", "3:1"], ["--aspect-ratio", "can't make 3:1"]),
    ],
    ids=[
        "ratio",
        "seed-negative",
        "seed-too-big",
        "seed-text",
        "blank-prompt",
        "long-prompt",
        "unknown-flag",
        "unknown-model",
        "edit-model",
        "count-one-model",
        "seed-seedless-model",
        "ratio-of-the-model",
    ],
)
async def test_invalid_input_is_one_clear_line_and_exit_2(tmp_path: Path, args: list[str], names: list[str]) -> None:
    code, out, err = await run_cli(tmp_path, *args, "--emulator")
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error:")
    for name in names:
        assert name in lines[0]
    assert "Traceback" not in err


async def test_missing_token_names_the_variable_and_where_to_get_it(tmp_path: Path) -> None:
    code, _, err = await run_cli(tmp_path, "a fox")
    assert code == 2
    assert err.strip().count("\n") == 0
    assert "RUNCOMFY_API_TOKEN" in err
    assert "runcomfy.com" in err


@pytest.mark.parametrize("shape", ["image", "nested"])
async def test_any_server_speaking_the_protocol_works_with_its_output_variants(
    tmp_path: Path, emulator: Emulator, shape: str
) -> None:
    emulator.config.output_shape = shape  # type: ignore[assignment]
    env = {"RUNCOMFY_BASE_URL": emulator.url, "RUNCOMFY_API_TOKEN": TOKEN}
    code, out, err = await run_cli(tmp_path, "a lantern", "--aspect-ratio", "9:16", env=env)
    assert code == 0, err
    with Image.open(io.BytesIO((tmp_path / out.strip()).read_bytes())) as image:
        assert image.height > image.width


async def test_completed_status_with_failed_result_is_an_upstream_failure(tmp_path: Path, emulator: Emulator) -> None:
    emulator.config.failure_rate = 1.0
    env = {"RUNCOMFY_BASE_URL": emulator.url, "RUNCOMFY_API_TOKEN": TOKEN}
    code, out, err = await run_cli(tmp_path, "a doomed job", env=env)
    assert code == 1
    assert out == ""
    lines = err.strip().splitlines()
    # The operator at the terminal gets RunComfy's own words, not the sentence members see.
    assert lines[-1].startswith("error: the job failed at RunComfy [result of ")
    assert lines[-1].endswith("job failed, error_code 500001: Generation failed: worker error]")
    assert [line for line in lines if line.startswith("error:")] == lines[-1:]  # progress lines, then one error
    assert "Traceback" not in err


async def test_rejected_token_is_exit_1_and_never_printed(tmp_path: Path, emulator: Emulator) -> None:
    wrong = "rc-WRONG-token-never-print-me"
    env = {"RUNCOMFY_BASE_URL": emulator.url, "RUNCOMFY_API_TOKEN": wrong}
    code, out, err = await run_cli(tmp_path, "a fox", env=env)
    assert code == 1
    [line] = err.strip().splitlines()
    assert line.startswith("error: RunComfy rejected RUNCOMFY_API_TOKEN: create a key in your RunComfy profile")
    assert "HTTP 401, error_code 400004" in line  # RunComfy's own answer, for the operator
    assert wrong not in out + err


async def test_a_refused_download_says_why_and_which_setting_to_change(tmp_path: Path, emulator: Emulator) -> None:
    env = {"RUNCOMFY_BASE_URL": emulator.url, "RUNCOMFY_API_TOKEN": TOKEN, "DOWNLOAD_MAX_BYTES": "1000"}
    code, out, err = await run_cli(tmp_path, "a large landscape", env=env)
    assert code == 1
    assert out == ""
    line = err.strip().splitlines()[-1]
    assert line.startswith("error: the finished image could not be downloaded: check DOWNLOAD_ALLOWED_HOSTS")
    assert "1000" in line  # the limit it passed


@pytest.mark.parametrize("where", ["folder", "under-a-file"])
async def test_an_output_that_cannot_be_written_is_refused_before_anything_is_sent(
    tmp_path: Path, emulator: Emulator, where: str
) -> None:
    if where == "folder":
        target = tmp_path / "pictures"
        target.mkdir()
    else:
        (tmp_path / "notes.txt").write_text("a file, where the command wants a folder")
        target = tmp_path / "notes.txt" / "fox.png"
    env = {"RUNCOMFY_BASE_URL": emulator.url, "RUNCOMFY_API_TOKEN": TOKEN}
    code, out, err = await run_cli(tmp_path, "a fox", "--output", str(target), env=env)
    assert code == 2
    assert out == ""
    [line] = err.strip().splitlines()
    assert line.startswith("error: --output:")
    assert ("is a folder" if where == "folder" else "is not a folder") in line
    assert emulator.submits == []  # nothing sent, nothing paid


async def test_an_image_that_cannot_be_written_after_all_is_kept_and_its_place_named(tmp_path: Path) -> None:
    from bot.cli import FileDestination
    from bot.download import DownloadedImage
    from bot.jobs import Delivered
    from storage.models import Job, JobOrigin, JobState

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the folder should be")
    destination = FileDestination(blocker / "fox.png", tmp_path / "data" / "images")
    now = datetime.now(UTC)
    job = Job(7, "m", "p", "1:1", 1, JobState.DELIVERING, JobOrigin(), now, now)
    image = DownloadedImage(b"\x89PNG fake bytes", "PNG", 1, 1, "image/png")
    assert await destination.deliver_images(job, [image]) == Delivered("file")
    assert destination.saved == [tmp_path / "data" / "images" / "imagine-7.png"]
    assert destination.saved[0].read_bytes() == image.data
    assert destination.problem is not None
    assert str(blocker / "fox.png") in destination.problem
    assert str(destination.saved[0]) in destination.problem


async def interrupt_cli(tmp_path: Path, emulator: Emulator, after: str) -> tuple[int, str]:
    """Start `generate`, press Ctrl-C (SIGINT) once the progress shows `after`; its exit status and stderr."""
    environment = {key: value for key, value in os.environ.items() if not key.startswith(("RUNCOMFY_", "DISCORD_"))}
    environment.update(
        {
            "DATABASE_PATH": str(tmp_path / "db" / "imagine.sqlite3"),
            "RUNCOMFY_BASE_URL": emulator.url,
            "RUNCOMFY_API_TOKEN": TOKEN,
            "POLL_MIN_INTERVAL_SECONDS": "0.05",
            "POLL_MAX_INTERVAL_SECONDS": "0.2",
        }
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "generate", "an interrupted fox",
        cwd=tmp_path, env=environment, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stderr is not None
    seen: list[str] = []
    async with asyncio.timeout(30):
        while after not in "".join(seen):
            line = await process.stderr.readline()
            assert line, "".join(seen)
            seen.append(line.decode())
        process.send_signal(signal.SIGINT)
        rest = await process.stderr.read()
        await process.wait()
    assert process.returncode is not None
    return process.returncode, "".join(seen) + rest.decode()


async def test_ctrl_c_while_queued_cancels_the_job_and_says_nothing_is_billed(
    tmp_path: Path, emulator: Emulator
) -> None:
    emulator.config.queue_time = Duration.constant(30.0)
    code, err = await interrupt_cli(tmp_path, emulator, "Queued")
    assert code == 130
    [request_id] = emulator.jobs
    assert f"interrupted: job 1, RunComfy request id {request_id}" in err
    assert "cancelled there: nothing is billed" in err
    assert emulator.jobs[request_id].cancelled_at is not None
    assert "Traceback" not in err


async def test_ctrl_c_while_generating_says_it_will_be_billed(tmp_path: Path, emulator: Emulator) -> None:
    emulator.config.queue_time = Duration.constant(0.0)
    emulator.config.run_time = Duration.constant(30.0)
    code, err = await interrupt_cli(tmp_path, emulator, "Generating")
    assert code == 130
    assert "already generating it: it will finish and be billed" in err
    assert "Traceback" not in err
