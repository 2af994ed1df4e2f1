"""One message version as a small Discord-like HTML page (dark theme), for tools/pictures.py to screenshot.

Only what the version holds is drawn: content (with Discord's markdown,
mentions and timestamps), embeds (colour bar, title, description, fields,
image, footer), attachments and buttons. Discord's own look is approximated
with its public colours; the fonts are whatever the machine has.
"""

from __future__ import annotations

import base64
import html
import io
import re
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from tests.fakediscord import FakeAttachment, MessageVersion

PAGE_WIDTH = 760
BACKGROUND = (49, 51, 56)  # #313338, Discord's dark chat background
IMAGE_WIDTH = 400  # how wide Discord shows an embed's image, in CSS pixels
BUTTON_STYLES = {1: "#5865f2", 2: "#4e5058", 3: "#248046", 4: "#da373c", 5: "#4e5058"}

CSS = """
body { margin: 0; background: #313338; color: #dbdee1; width: %(width)dpx;
       font: 16px/1.375 "gg sans", "Noto Sans", "Helvetica Neue", "DejaVu Sans", sans-serif; }
.message { padding: 16px 16px 16px 72px; position: relative; }
.used { color: #b5bac1; font-size: 14px; margin-bottom: 4px; }
.used::before { content: ""; position: absolute; left: 36px; top: 26px; width: 28px; height: 10px;
                border-left: 2px solid #4e5058; border-top: 2px solid #4e5058; border-top-left-radius: 6px; }
.avatar { position: absolute; left: 16px; width: 40px; height: 40px; border-radius: 50%%; background: #5865f2;
          color: white; font-weight: 600; display: flex; align-items: center; justify-content: center; }
.name { color: #f2f3f5; font-weight: 600; }
.tag { background: #5865f2; color: white; font-size: 10px; font-weight: 600; border-radius: 3px;
       padding: 1px 4px; margin-left: 4px; vertical-align: 2px; }
.time { color: #949ba4; font-size: 12px; margin-left: 6px; }
.mention { background: rgba(88, 101, 242, .3); color: #c9cdfb; border-radius: 3px; padding: 0 2px; }
.spoiler { background: #1e1f22; color: #1e1f22; border-radius: 3px; }
code { background: #1e1f22; border-radius: 4px; padding: 1px 4px; font-size: 14px; }
.embed { background: #2b2d31; border-left: 4px solid; border-radius: 4px; max-width: 520px;
         padding: 8px 16px 16px 12px; margin-top: 6px; }
.embed .title { color: #f2f3f5; font-weight: 600; margin-top: 8px; }
.embed .description { font-size: 14px; margin-top: 8px; }
.fields { display: grid; grid-template-columns: repeat(3, 1fr); gap: 8px; margin-top: 8px; font-size: 14px; }
.field.wide { grid-column: 1 / -1; }
.field .label { color: #f2f3f5; font-weight: 600; }
.embed img { display: block; margin-top: 16px; width: %(image)dpx; max-width: 100%%; border-radius: 4px; }
.footer { color: #b5bac1; font-size: 12px; margin-top: 8px; }
.buttons { display: flex; gap: 8px; margin-top: 8px; }
.button { color: white; border-radius: 3px; padding: 2px 16px; height: 32px; display: flex; align-items: center;
          gap: 4px; font-size: 14px; font-weight: 500; }
.ephemeral { color: #949ba4; font-size: 12px; margin-top: 6px; }
.ephemeral b { color: #00a8fc; font-weight: 400; }
"""


@dataclass
class Names:
    """Who and what mentions point at: Discord shows names, the content carries ids."""

    bot: str
    users: dict[int, str] = field(default_factory=dict)
    channels: dict[int, str] = field(default_factory=dict)
    roles: dict[int, str] = field(default_factory=dict)


def markdown(text: str, names: Names) -> str:
    """The part of Discord's markdown the bot uses: bold, italics, code, spoilers, mentions, timestamps."""
    out = html.escape(text)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    out = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", out)
    out = re.sub(r"(?<![*\w])\*(?!\s)(.+?)\*", r"<i>\1</i>", out)
    out = re.sub(r"\|\|(.+?)\|\|", r'<span class="spoiler">\1</span>', out)
    out = re.sub(r"\\([*_`|~>\\])", r"\1", out)
    out = re.sub(r"&lt;t:(\d+)(?::[tTdDfFR])?&gt;", "a few seconds ago", out)

    def mention(kind: str, table: dict[int, str]) -> None:
        nonlocal out
        sigil = "#" if kind == "#" else "@"
        pattern = {"@": r"&lt;@!?(\d+)&gt;", "#": r"&lt;#(\d+)&gt;", "&": r"&lt;@&amp;(\d+)&gt;"}[kind]
        out = re.sub(
            pattern,
            lambda m: f'<span class="mention">{sigil}{html.escape(table.get(int(m[1]), "unknown"))}</span>',
            out,
        )

    mention("&", names.roles)
    mention("@", names.users)
    mention("#", names.channels)
    return out.replace("\n", "<br>")


def data_uri(attachment: FakeAttachment) -> str:
    """The attachment shrunk to what the page shows (at 2× for sharp screens), inline as a PNG."""
    with Image.open(io.BytesIO(attachment.data)) as image:
        shown = image.convert("RGB")
    shown.thumbnail((IMAGE_WIDTH * 2, IMAGE_WIDTH * 2))
    buffer = io.BytesIO()
    shown.save(buffer, "PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def embed_html(embed: dict[str, Any], attachments: list[FakeAttachment], names: Names) -> str:
    colour = f"#{embed.get('color', 0x1E1F22):06x}"
    parts = [f'<div class="embed" style="border-color: {colour}">']
    if embed.get("title"):
        parts.append(f'<div class="title">{markdown(embed["title"], names)}</div>')
    if embed.get("description"):
        parts.append(f'<div class="description">{markdown(embed["description"], names)}</div>')
    if embed.get("fields"):
        parts.append('<div class="fields">')
        for item in embed["fields"]:
            wide = "" if item.get("inline") else " wide"
            parts.append(
                f'<div class="field{wide}"><div class="label">{markdown(item["name"], names)}</div>'
                f"<div>{markdown(item['value'], names)}</div></div>"
            )
        parts.append("</div>")
    url = (embed.get("image") or {}).get("url", "")
    shown = next((a for a in attachments if url.endswith("/" + a.filename)), None)
    if shown is not None:
        parts.append(f'<img alt="" src="{data_uri(shown)}">')
    if embed.get("footer"):
        parts.append(f'<div class="footer">{markdown(embed["footer"]["text"], names)}</div>')
    parts.append("</div>")
    return "".join(parts)


def buttons_html(components: list[dict[str, Any]]) -> str:
    rows = []
    for row in components:
        buttons = []
        for button in row.get("components", []):
            if button.get("type") != 2:
                continue
            emoji = html.escape((button.get("emoji") or {}).get("name") or "")
            label = html.escape(button.get("label") or "")
            colour = BUTTON_STYLES.get(button.get("style", 2), "#4e5058")
            faded = "opacity: .5;" if button.get("disabled") else ""
            buttons.append(f'<div class="button" style="background: {colour}; {faded}">{emoji} {label}</div>')
        if buttons:
            rows.append(f'<div class="buttons">{"".join(buttons)}</div>')
    return "".join(rows)


def page(version: MessageVersion, names: Names, command: str, *, ephemeral: bool = False) -> str:
    """A whole HTML page: the slash command line, then the bot's message as the member sees it."""
    embedded = {(e.get("image") or {}).get("url", "").rsplit("/", 1)[-1] for e in version.embeds}
    loose = [a for a in version.attachments if a.filename not in embedded]
    body = [
        '<div class="message">',
        f'<div class="used">{markdown(command, names)}</div>',
        f'<div class="avatar">{html.escape(names.bot[:1])}</div>',
        f'<div><span class="name">{html.escape(names.bot)}</span><span class="tag">APP</span>'
        '<span class="time">Today at 21:07</span></div>',
    ]
    if version.content:
        body.append(f"<div>{markdown(version.content, names)}</div>")
    body.extend(embed_html(embed, version.attachments, names) for embed in version.embeds)
    body.extend(f'<img alt="" style="width: {IMAGE_WIDTH}px" src="{data_uri(a)}">' for a in loose)
    body.append(buttons_html(version.components))
    if ephemeral:
        body.append('<div class="ephemeral">👁 Only you can see this · <b>Dismiss message</b></div>')
    body.append("</div>")
    style = CSS % {"width": PAGE_WIDTH, "image": IMAGE_WIDTH}
    head = f'<head><meta charset="utf-8"><style>{style}</style></head>'
    return f"<!doctype html><html>{head}<body>{''.join(body)}</body></html>"
