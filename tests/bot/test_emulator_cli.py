"""`python -m bot emulator` as an operator meets it: the real command in a subprocess.

Its help, its start lines (the `.env` lines to paste, which must actually
work), and the one-line errors for a port it cannot have.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from bot.emulator import Duration
from bot.emulator_cli import config_from_args, configure_parser
from bot.settings import DEFAULT_MODEL

ROOT = Path(__file__).resolve().parents[2]


def env() -> dict[str, str]:
    """This environment without anything that configures the bot, and without NO_COLOR (colour is under test)."""
    prefixes = ("RUNCOMFY_", "DISCORD_", "SHARD_", "HEALTH_", "LOG_", "NO_COLOR")
    return {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}


async def run_emulator(tmp_path: Path, *args: str) -> tuple[int, str, str]:
    """Run the command to its end (it must end on its own: these are the failures and --help)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "emulator", *args, cwd=tmp_path, env=env(), stdout=-1, stderr=-1
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port on 127.0.0.1 that another program is listening on."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


@pytest.mark.parametrize("port", ["70000", "-1", "65536", "eighty"])
async def test_a_port_out_of_range_is_one_line_and_status_2(tmp_path: Path, port: str) -> None:
    code, out, err = await run_emulator(tmp_path, "--port", port)
    assert code == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("error: argument --port: ")
    assert "0 for any free port" in err or "not a port number" in err


async def test_a_port_in_use_is_one_line_and_status_2(tmp_path: Path, taken_port: int) -> None:
    code, out, err = await run_emulator(tmp_path, f"--port={taken_port}")
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert lines == [
        f"error: the emulator cannot listen on 127.0.0.1:{taken_port} (Address already in use): "
        "pick another port with --port N, or --port 0 for any free one"
    ], err


async def test_help_gives_every_option_a_text_and_its_default(tmp_path: Path) -> None:
    code, out, _ = await run_emulator(tmp_path, "--help")
    assert code == 0
    # One entry per option: its line starts with "  --", its help may wrap onto more indented lines.
    entries = re.split(r"\n(?=  --)", out.split("\nserver:\n", 1)[1])
    parser = argparse.ArgumentParser()
    configure_parser(parser)
    options = {a.option_strings[0] for a in parser._actions if a.option_strings and a.dest != "help"}
    assert len(options) == 34
    described = {}
    for entry in entries:
        name = entry.split()[0]
        if name.startswith("--"):
            described[name] = " ".join(entry.split())
    assert set(described) == options
    for name, text in described.items():
        help_text = text.split(" (default: ")[0]
        assert len(help_text.split()) >= 3, f"{name} has no help text: {text!r}"
        assert "(default: " in text, f"{name} does not show its default: {text!r}"
    assert "(default: lognormal:1,0.5,10)" in described["--queue-time"]
    assert "(default: 8188)" in described["--port"]


async def test_the_start_lines_are_the_env_lines_to_paste_and_they_work(tmp_path: Path) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "emulator",
        "--port=0",
        "--token=cli-token",
        cwd=tmp_path,
        env=env(),
        stdout=-1,
        stderr=-1,
    )
    assert process.stdout is not None
    try:
        lines: list[str] = []
        while not any(line.startswith("RUNCOMFY_API_TOKEN=") for line in lines):
            lines.append((await asyncio.wait_for(process.stdout.readline(), 30)).decode().rstrip("\n"))
        settings = dict(line.split("=", 1) for line in lines if line.startswith("RUNCOMFY_"))
        assert settings["RUNCOMFY_API_TOKEN"] == "cli-token"
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", settings["RUNCOMFY_BASE_URL"])
        assert "RUNCOMFY_MODEL" not in settings  # the default model needs no line
        url = f"{settings['RUNCOMFY_BASE_URL']}/v1/models/{DEFAULT_MODEL}"
        async with (
            aiohttp.ClientSession() as session,
            session.get(url, headers={"Authorization": "Bearer cli-token"}) as resp,
        ):
            assert resp.status == 200
    finally:
        process.send_signal(signal.SIGINT)
        _, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 130  # Ctrl-C: stopped on request, no traceback
    assert "Traceback" not in err.decode()
    assert "RunComfy emulator listening on http://127.0.0.1:" in err.decode()
    assert "\x1b[" not in err.decode()  # a pipe is no terminal: no colour codes


def test_flags_build_the_config() -> None:
    parser = argparse.ArgumentParser()
    configure_parser(parser)
    args = parser.parse_args(
        [
            "--port=0",
            "--queue-time=uniform:1,2",
            "--run-time=lognormal:8,0.3,30",
            "--failure-rate=0.1",
            "--rate-429=0.2",
            "--retry-after=none",
            "--rate-5xx=0.05",
            "--drop-rate=0.01",
            "--malformed-rate=0.02",
            "--error-code-rate=0.03",
            "--slow-rate=0.04",
            "--slow-seconds=3",
            "--expire-after=60",
            "--output-shape=nested",
            "--unknown-state=warming_up",
            "--result-kind=huge",
            "--no-content-length",
            "--full-size",
            "--base-price=0.04",
            "--cost-shape=billing",
        ]
    )
    config = config_from_args(args)
    assert config.queue_time == Duration.uniform(1, 2)
    assert config.run_time == Duration.lognormal(8, 0.3, 30)
    assert (config.failure_rate, config.rate_429, config.retry_after, config.rate_5xx) == (0.1, 0.2, None, 0.05)
    assert (config.drop_rate, config.malformed_rate, config.error_code_rate) == (0.01, 0.02, 0.03)
    assert (config.slow_rate, config.slow_seconds, config.expire_after) == (0.04, 3.0, 60.0)
    assert (config.output_shape, config.unknown_state, config.result_kind) == ("nested", "warming_up", "huge")
    assert (config.huge_content_length, config.full_size) == (False, True)
    assert (config.base_price_usd, config.cost_shape) == (0.04, "billing")
    with pytest.raises(SystemExit):
        parser.parse_args(["--failure-rate=2"])


def test_a_duration_prints_the_way_it_is_typed() -> None:
    for text in ("constant:2", "uniform:1,5", "lognormal:8,0.4", "lognormal:1,0.5,10"):
        assert str(Duration.parse(text)) == text
