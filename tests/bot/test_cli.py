"""`python -m bot generate` as a user runs it: a subprocess, its exit status, its one-line messages."""

from __future__ import annotations

import asyncio
import io
import os
import sys
from collections.abc import AsyncIterator
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
    ],
    ids=["ratio", "seed-negative", "seed-too-big", "seed-text", "blank-prompt", "long-prompt", "unknown-flag"],
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
    assert lines[-1] == "error: The image service failed to generate this image."
    assert [line for line in lines if line.startswith("error:")] == lines[-1:]  # progress lines, then one error
    assert "Traceback" not in err


async def test_rejected_token_is_exit_1_and_never_printed(tmp_path: Path, emulator: Emulator) -> None:
    wrong = "rc-WRONG-token-never-print-me"
    env = {"RUNCOMFY_BASE_URL": emulator.url, "RUNCOMFY_API_TOKEN": wrong}
    code, out, err = await run_cli(tmp_path, "a fox", env=env)
    assert code == 1
    assert "key was rejected" in err
    assert wrong not in out + err
