"""Turning a create/edit request body into a message version, enforcing what Discord enforces on it.

Shared by channel routes (bot token) and interaction routes (token): content, embed,
component and file limits, the per-guild upload limit, `attachment://` references,
edit semantics of `attachments` (unlisted files are removed), permissions (channel
sends need EMBED_LINKS/ATTACH_FILES or get 403; interaction replies follow
`app_permissions`: embeds silently dropped, files refused), and who gets pinged.
"""

from __future__ import annotations

import copy
import json
import mimetypes
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import BodyPartReader, web

from .errors import DiscordError, FormErrors, Path, empty_message, entity_too_large, missing_permissions
from .messages import (
    COMPONENTS_V2,
    EPHEMERAL,
    LOADING,
    SUPPRESS_EMBEDS,
    SUPPRESS_NOTIFICATIONS,
    FakeAttachment,
    FakeMessage,
    MessageVersion,
    compute_pings,
    image_size,
)
from .permissions import Perm
from .rules import (
    ATTACHMENTS_MAX,
    EMBED_IMAGE_EXTENSIONS,
    REQUEST_LIMIT,
    check_message_fields,
    embed_attachment_refs,
)
from .state import FakeChannel, FakeUser

if TYPE_CHECKING:
    from .fake import FakeDiscord

_FILES_FIELD = re.compile(r"files\[(\d+)\]")
RAW_BODY = web.RequestKey("fakediscord.raw_body", bytes)  # the bytes read_body saw, for RecordedRequest.body
USER_FLAGS = SUPPRESS_EMBEDS | SUPPRESS_NOTIFICATIONS | COMPONENTS_V2


@dataclass
class Upload:
    index: int
    filename: str
    data: bytes


@dataclass
class Body:
    payload: dict[str, Any] = field(default_factory=dict)
    files: dict[int, Upload] = field(default_factory=dict)


async def read_body(request: web.Request) -> Body:
    """JSON, or multipart with `payload_json` plus `files[n]` (what discord.py sends)."""
    body = Body()
    raw: list[bytes] = []
    try:
        if request.content_type.startswith("multipart/"):
            reader = await request.multipart()
            while (part := await reader.next()) is not None:
                if not isinstance(part, BodyPartReader):
                    continue
                name = part.name or ""
                if name == "payload_json":
                    text = await part.text()
                    raw.append(text.encode())
                    body.payload = json.loads(text)
                elif (match := _FILES_FIELD.fullmatch(name)) or part.filename:
                    index = int(match.group(1)) if match else len(body.files)
                    data = bytes(await part.read(decode=False))
                    raw.append(data)
                    body.files[index] = Upload(index, part.filename or f"file{index}", data)
            request[RAW_BODY] = b"\n".join(raw)
        elif request.can_read_body:
            text = await request.text()
            body.payload = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError:
        raise DiscordError(400, 50109, "The request body contains invalid JSON.") from None
    if not isinstance(body.payload, dict):
        raise DiscordError(400, 50109, "The request body contains invalid JSON.")
    return body


@dataclass
class ComposeContext:
    fake: FakeDiscord
    channel: FakeChannel
    author: FakeUser
    perms: int  # the author's channel permissions, or the interaction's app_permissions
    via_interaction: bool = False
    prefix: Path = ()  # ("data",) inside an interaction callback

    @property
    def default_parse(self) -> tuple[str, ...]:
        return ("users",) if self.via_interaction else ("users", "roles", "everyone")


def _make_attachment(ctx: ComposeContext, upload: Upload, entry: dict[str, Any] | None) -> FakeAttachment:
    entry = entry or {}
    filename = str(entry.get("filename") or upload.filename)
    content_type = mimetypes.guess_type(filename)[0]
    width, height = image_size(filename, upload.data)
    attachment_id = ctx.fake.ids.next()
    attachment = FakeAttachment(
        id=attachment_id,
        filename=filename,
        data=upload.data,
        content_type=content_type,
        description=entry.get("description"),
        width=width,
        height=height,
        url=f"{ctx.fake.base_url}/attachments/{ctx.channel.id}/{attachment_id}/{filename}",
        signer=ctx.fake.cdn.sign,
    )
    ctx.fake.attachments[attachment_id] = attachment
    return attachment


def _plan_attachments(
    payload: dict[str, Any], files: dict[int, Upload], base: FakeMessage | None, errs: FormErrors
) -> tuple[list[FakeAttachment], list[tuple[Upload, dict[str, Any] | None]]]:
    """Existing attachments to keep and uploads to add. On edit, only listed attachments survive."""
    existing = list(base.attachments) if base is not None else []
    listed = payload.get("attachments")
    if listed is None:
        return existing, [(files[i], None) for i in sorted(files)]
    by_id = {a.id: a for a in existing}
    kept: list[FakeAttachment] = []
    new: list[tuple[Upload, dict[str, Any] | None]] = []
    for n, entry in enumerate(listed):
        try:
            attachment_id = int(entry.get("id"))
        except (TypeError, ValueError):
            errs.add(("attachments", n, "id"), "BASE_TYPE_REQUIRED", "This field is required")
            continue
        if attachment_id in by_id:
            kept.append(by_id[attachment_id])
        elif attachment_id in files:
            new.append((files[attachment_id], entry))
        else:
            errs.add(("attachments", n, "id"), "ATTACHMENT_NOT_FOUND", f"Unknown attachment {attachment_id}")
    referenced = {id(upload) for upload, _ in new}
    new += [(files[i], None) for i in sorted(files) if id(files[i]) not in referenced]
    return kept, new


def _resolve_embed_refs(embeds: list[dict[str, Any]], attachments: list[FakeAttachment], errs: FormErrors) -> None:
    by_name = {a.filename: a for a in attachments}
    for i, key, url_key, name in embed_attachment_refs(embeds):
        path: Path = ("embeds", i, key, url_key)
        attachment = by_name.get(name)
        if attachment is None:
            errs.add(path, "ATTACHMENT_NOT_FOUND", f"attachment://{name} does not name an uploaded file")
            continue
        if not name.lower().endswith(EMBED_IMAGE_EXTENSIONS):
            errs.add(path, "BASE_TYPE_INVALID_URL", "attachment:// in an embed must be jpg, jpeg, png, webp or gif")
            continue
        node = embeds[i][key]
        node[url_key] = attachment.url
        node["proxy_url"] = attachment.url
        if attachment.width is not None:
            node |= {"width": attachment.width, "height": attachment.height}


def build_version(
    ctx: ComposeContext, body: Body, base: FakeMessage | None, *, reply_to: FakeMessage | None = None
) -> MessageVersion:
    """A validated new version: a fresh message when `base` is None, else an edit of `base`."""
    payload = body.payload
    for upload in body.files.values():
        if len(upload.data) > ctx.channel.upload_limit:
            raise entity_too_large()
    if sum(len(upload.data) for upload in body.files.values()) > max(REQUEST_LIMIT, ctx.channel.upload_limit):
        raise entity_too_large()  # the whole request has a cap of its own (docs/models.md)
    errs = FormErrors(ctx.prefix)
    check_message_fields(payload, errs)
    kept, new = _plan_attachments(payload, body.files, base, errs)
    if len(kept) + len(new) > ATTACHMENTS_MAX:
        errs.add(("attachments",), "BASE_TYPE_MAX_LENGTH", f"Must be {ATTACHMENTS_MAX} or fewer in length.")
    errs.raise_if_any()

    if "embeds" in payload:
        embeds = copy.deepcopy(payload.get("embeds") or [])
        if embeds and not ctx.perms & Perm.EMBED_LINKS:
            if not ctx.via_interaction:
                raise missing_permissions()
            embeds = []  # observed: interaction replies lose their embeds without EMBED_LINKS
    else:
        embeds = copy.deepcopy(base.embeds) if base is not None else []
    if new and not ctx.perms & Perm.ATTACH_FILES:
        raise missing_permissions()
    for embed in embeds:
        embed.setdefault("type", "rich")

    attachments = kept + [_make_attachment(ctx, upload, entry) for upload, entry in new]
    _resolve_embed_refs(embeds, attachments, errs)
    errs.raise_if_any()

    previous = base.content if base is not None else ""
    content: str = payload.get("content") or "" if "content" in payload else previous
    if "components" in payload:
        components = copy.deepcopy(payload.get("components") or [])
    else:
        components = copy.deepcopy(base.components) if base is not None else []

    requested = int(payload.get("flags") or 0)
    if base is None:
        flags = requested & (USER_FLAGS | (EPHEMERAL if ctx.via_interaction else 0))
    else:
        kept_bits = base.flags & ~(USER_FLAGS | LOADING)
        flags = kept_bits | ((requested if "flags" in payload else base.flags) & USER_FLAGS)

    if not (content or embeds or attachments or components or payload.get("sticker_ids") or payload.get("poll")):
        raise empty_message()

    guild = ctx.channel.guild
    if guild is not None:
        member_ids = set(guild.members)
        roles = {r.id: r.mentionable for r in guild.roles.values() if not r.is_everyone}
    else:
        member_ids = {u.id for u in (ctx.channel.recipient, ctx.fake.bot_user) if u is not None}
        roles = {}
    pings = compute_pings(
        content,
        payload.get("allowed_mentions"),
        default_parse=ctx.default_parse,
        author_perms=ctx.perms,
        member_ids=member_ids,
        roles=roles,
        reply_author=reply_to.author.id if reply_to is not None else None,
        author_id=ctx.author.id,
    )
    return MessageVersion(content, embeds, attachments, components, flags, pings)


def resolve_reference(ctx: ComposeContext, payload: dict[str, Any]) -> tuple[dict[str, Any] | None, FakeMessage | None]:
    """A reply's `message_reference`: the target must exist unless `fail_if_not_exists` is false."""
    ref = payload.get("message_reference")
    if not isinstance(ref, dict) or ref.get("type", 0) != 0:
        return None, None
    channel_id = int(ref.get("channel_id") or ctx.channel.id)
    target = ctx.fake.messages.get(int(ref.get("message_id") or 0))
    if target is None or target.deleted or target.channel.id != channel_id or target.ephemeral:
        if ref.get("fail_if_not_exists", True):
            errs = FormErrors(ctx.prefix)
            errs.add(("message_reference",), "MESSAGE_REFERENCE_UNKNOWN_MESSAGE", "Unknown message")
            errs.raise_if_any()
        return None, None
    if not ctx.via_interaction and not ctx.perms & Perm.READ_MESSAGE_HISTORY:
        raise missing_permissions()
    reference = {"type": 0, "message_id": str(target.id), "channel_id": str(target.channel.id)}
    if target.channel.guild is not None:
        reference["guild_id"] = str(target.channel.guild.id)
    return reference, target
