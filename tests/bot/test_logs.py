"""Colour in text logs: only for a terminal, never when NO_COLOR is set, never in a pipe or a file.

A pseudo-terminal (`os.openpty`) is a real TTY, so these tests see exactly what
an operator's terminal would receive.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Iterator
from typing import TextIO

import pytest

from bot.logs import setup_logging, wants_colour

ESC = "\x1b["


@pytest.fixture
def root_logger() -> Iterator[logging.Logger]:
    """The root logger, restored afterwards (pytest's own capture handlers included)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield root
    finally:
        for handler in list(root.handlers):
            if handler not in handlers:
                root.removeHandler(handler)
        root.setLevel(level)


@pytest.fixture
def terminal() -> Iterator[tuple[TextIO, int]]:
    """A writable text stream on the slave end of a pseudo-terminal, and the master's descriptor to read it."""
    master, slave = os.openpty()
    stream = open(slave, "w", encoding="utf-8")  # noqa: SIM115 (closed below, after the test)
    try:
        yield stream, master
    finally:
        stream.close()
        os.close(master)


def written(terminal: tuple[TextIO, int]) -> str:
    stream, master = terminal
    stream.flush()
    return os.read(master, 65536).decode()


def log_one_line(stream: TextIO, environ: dict[str, str]) -> None:
    setup_logging(level=logging.INFO, fmt="text", stream=stream, environ=environ)
    logging.getLogger("bot.app").warning("logged in as %s", "ImagineBot")


def test_a_terminal_gets_colour(root_logger: logging.Logger, terminal: tuple[TextIO, int]) -> None:
    log_one_line(terminal[0], {})
    line = written(terminal)
    assert ESC in line
    assert "logged in as ImagineBot" in line


def test_no_color_turns_colour_off_even_on_a_terminal(
    root_logger: logging.Logger, terminal: tuple[TextIO, int]
) -> None:
    log_one_line(terminal[0], {"NO_COLOR": "1"})
    line = written(terminal)
    assert ESC not in line
    assert "] [WARNING ] bot.app: logged in as ImagineBot" in line


def test_a_stream_that_is_not_a_terminal_gets_plain_lines(root_logger: logging.Logger) -> None:
    """discord.py alone colours any stream inside Docker; a pipe or a file must never get escape codes."""
    stream = io.StringIO()
    log_one_line(stream, {})
    line = stream.getvalue()
    assert ESC not in line
    assert line.rstrip().endswith("] [WARNING ] bot.app: logged in as ImagineBot")


def test_json_lines_are_never_coloured(root_logger: logging.Logger, terminal: tuple[TextIO, int]) -> None:
    setup_logging(level=logging.INFO, fmt="json", stream=terminal[0], environ={})
    logging.getLogger("bot.app").warning("plain")
    assert ESC not in written(terminal)


def test_an_empty_no_color_does_not_count(terminal: tuple[TextIO, int]) -> None:
    """no-color.org: only a NO_COLOR that is present *and not empty* turns colour off."""
    assert wants_colour(terminal[0], {"NO_COLOR": ""})
    assert not wants_colour(terminal[0], {"NO_COLOR": "0"})
    closed = io.StringIO()
    closed.close()
    assert not wants_colour(closed, {})
