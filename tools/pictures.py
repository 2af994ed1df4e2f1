"""`python -m tools.pictures` (`make pictures`): the README's pictures of what a member sees, made by the bot itself.

The unmodified bot (`bot.app.ImagineBot`) runs against the fake Discord and the
emulator exactly as tests/e2e/conftest.py sets them up; a member runs
/imagine and a moderator /imagine-admin show, and the versions of the replies
are read through the fake's test API only (message versions: content, embeds,
attachments, components), never through the cogs, which may change shape.
Each chosen version becomes a small Discord-like HTML page (tools/discord_html.py)
and headless Chromium screenshots it into docs/pictures/*.png.

`--html-only` stops before Chromium, `--keep-html` keeps the pages (the test suite reads both).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageChops

from bot.app import ImagineBot
from bot.emulator import Duration, Emulator, EmulatorConfig
from tests.bot_settings import QUICK_POLLING, bot_settings
from tests.fakediscord import FakeDiscord, FakeMessage, MessageVersion, Perm
from tests.fakediscord.runner import run_bot
from tools.discord_html import BACKGROUND, PAGE_WIDTH, Names, page

OUT = Path(__file__).resolve().parents[1] / "docs" / "pictures"
PROMPT = "a lighthouse on a cliff at dusk, oil painting"
TOKEN = "pictures-emulator-token"  # noqa: S105 (the emulator's stand-in token)
SCALE = 2  # device pixels per CSS pixel: sharp on high-density screens, where GitHub shows READMEs
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)


@dataclass
class Shot:
    """One picture: its file name, the message version, and the lines Discord shows around it."""

    name: str
    version: MessageVersion
    command: str  # "alice used /imagine"
    ephemeral: bool = False


def pick(message: FakeMessage, needle: str, *, with_image: bool = False) -> MessageVersion:
    """The first version whose content shows `needle` (the last with an image, for the finished reply)."""
    versions = [v for v in message.versions if needle in v.content and (v.attachments or not with_image)]
    if not versions:
        seen = "\n".join(f"  {v.content!r}" for v in message.versions)
        raise SystemExit(f"no version of the reply shows {needle!r}; the member saw:\n{seen}")
    return versions[-1] if with_image else versions[0]


async def capture() -> tuple[list[Shot], Names]:
    """Run the bot once, as the end-to-end tests do, and keep the versions worth a picture."""
    fake = FakeDiscord()
    await fake.start()
    try:
        guild = fake.add_guild("Art Club", premium_tier=0)
        general = guild.add_channel("general")
        alice = guild.add_member("alice")
        moderators = guild.add_role("Moderators", permissions=Perm.MANAGE_GUILD | Perm.MANAGE_MESSAGES)
        moderator = guild.add_member("moderator", roles=[moderators])
        # Long enough to see the queue count down; full-size renders, as the model's are.
        config = EmulatorConfig(
            queue_time=Duration.constant(1.5), queue_position_start=3, run_time=Duration.constant(1.0), full_size=True
        )
        async with Emulator(config, token=TOKEN, seed=7) as emulator:
            with tempfile.TemporaryDirectory(prefix="pictures-") as tmp:
                settings = bot_settings(
                    fake,
                    emulator,
                    token=TOKEN,
                    database_path=Path(tmp) / "imagine.sqlite3",
                    guild_ids=[guild.id],
                    **QUICK_POLLING,
                )
                async with run_bot(fake, ImagineBot(settings, guild_ready_timeout=0.05)):
                    imagine = await alice.run_command("imagine", general, prompt=PROMPT, aspect_ratio="16:9", seed=7)

                    def delivered() -> FakeMessage | None:
                        message = imagine.original_message
                        return message if message is not None and message.attachments else None

                    reply = await fake.wait_for(delivered, 60)
                    show = await moderator.run_command("imagine-admin show", general)
                    settings_reply = await show.wait_for_message()
        used = f"{alice.name} used /imagine"
        shots = [
            Shot("queued", pick(reply, "Queued · #"), used),
            Shot("generating", pick(reply, "Generating"), used),
            Shot("done", pick(reply, "", with_image=True), used),
            Shot("admin-show", settings_reply.current, f"{moderator.name} used /imagine-admin show", ephemeral=True),
        ]
        names = Names(
            bot=fake.bot_user.username,
            users={member.id: member.name for member in guild.members.values()},
            channels={channel.id: channel.name for channel in guild.channels.values()},
            roles={role.id: role.name for role in guild.roles.values()},
        )
        return shots, names
    finally:
        await fake.close()


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def screenshot(browser: str, html: Path, png: Path) -> None:
    """Chromium draws the page into a tall window; the empty background below the message is cut off."""
    with tempfile.TemporaryDirectory(prefix="pictures-chromium-") as profile:
        subprocess.run(  # noqa: S603 (our own arguments)
            [
                browser,
                *CHROMIUM_FLAGS,
                f"--user-data-dir={profile}",
                f"--force-device-scale-factor={SCALE}",
                f"--window-size={PAGE_WIDTH},1400",
                f"--screenshot={png}",
                html.as_uri(),
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
    with Image.open(png) as shot:
        image = shot.convert("RGB")
    content = ImageChops.difference(image, Image.new("RGB", image.size, BACKGROUND)).getbbox()
    if content is None:
        raise SystemExit(f"Chromium drew an empty page for {html.name}")
    margin = 16 * SCALE
    image.crop((0, 0, image.width, min(image.height, content[3] + margin))).save(png, optimize=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tools.pictures", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=OUT, help=f"where the pictures go (default {OUT})")
    parser.add_argument("--html-only", action="store_true", help="write the HTML pages, skip Chromium")
    parser.add_argument("--keep-html", action="store_true", help="keep the HTML pages next to the pictures")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    browser = chromium()
    if browser is None and not args.html_only:
        sys.stderr.write("Chromium is needed for the screenshots: apt-get install -y chromium (or pass --html-only)\n")
        return 2
    shots, names = asyncio.run(capture())
    args.out.mkdir(parents=True, exist_ok=True)
    for shot in shots:
        html = (args.out / f"{shot.name}.html").resolve()
        html.write_text(page(shot.version, names, shot.command, ephemeral=shot.ephemeral), encoding="utf-8")
        if browser is not None and not args.html_only:
            screenshot(browser, html, args.out / f"{shot.name}.png")
            if not args.keep_html:
                html.unlink()
        print(args.out / f"{shot.name}.{'html' if args.html_only else 'png'}")  # noqa: T201
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
