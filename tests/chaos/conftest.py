"""The end-to-end fixtures (the product bot in-process against the fake Discord and the emulator), shared."""

from tests.e2e.conftest import bot, emulator, settings, start_bot

__all__ = ["bot", "emulator", "settings", "start_bot"]
