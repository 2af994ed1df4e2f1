"""A readable dump of the fake's state, for `wait_for` timeouts and failing tests."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .fake import FakeDiscord
    from .messages import FakeMessage


def _describe(message: FakeMessage) -> str:
    parts = [f"[{message.id}] {message.author.username}: {message.content[:80]!r}"]
    if message.embeds:
        parts.append(f"embeds={len(message.embeds)}")
    if message.attachments:
        parts.append("files=" + ",".join(a.filename for a in message.attachments))
    if message.components:
        parts.append("items=" + ",".join(str(c.get("custom_id") or c.get("url")) for c in message.items()))
    if message.flags:
        parts.append(f"flags={message.flags}")
    if message.reactions:
        parts.append("reactions=" + ",".join(f"{e}x{len(u)}" for e, u in message.reactions.items()))
    if message.history:
        parts.append(f"edits={len(message.history)}")
    if message.deleted:
        parts.append("DELETED")
    return " ".join(parts)


def summarize(fake: FakeDiscord, *, per_channel: int = 6, requests: int = 25) -> str:
    gw = fake.gateway
    lines = [
        f"clock offset {fake.clock.offset:.1f} s; gateway connected={gw.connected} "
        f"identify={gw.identify_count} resume={gw.resume_count} close_codes={gw.close_codes}",
    ]
    for channel in fake.channels.values():
        where = channel.guild.name if channel.guild else "DM"
        lines.append(f"#{channel.name} ({where}){' DELETED' if channel.deleted else ''}:")
        lines += [f"  {_describe(m)}" for m in channel.messages[-per_channel:]]
    interactions = list(fake.interactions.by_id.values())[-10:]
    if interactions:
        lines.append("interactions:")
        for i in interactions:
            responses = ", ".join(
                f"{r.route}:{r.status}" + (f"/{r.error_code}" if r.error_code else "") for r in i.responses
            )
            lines.append(f"  {i!r} {i.failed_reason} [{responses}]")
    lines.append(f"last requests ({len(fake.requests)} total, {fake.rate_limited_count} x 429):")
    lines += [
        f"  {r.status} {r.key}" + (f" code={r.error_code}" if r.error_code else "") for r in fake.requests[-requests:]
    ]
    if fake.unknown_routes:
        lines.append(f"unknown routes: {fake.unknown_routes}")
    if fake.faults.served:
        lines.append(f"faults served: {fake.faults.served[-10:]}")
    return "\n".join(lines)
