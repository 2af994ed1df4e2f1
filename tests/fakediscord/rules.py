"""Message, embed, component and modal limits (docs/discord-platform.md, MSG, COMP) -> 400 50035 field errors."""

from __future__ import annotations

from typing import Any

from .errors import FormErrors, Path
from .messages import COMPONENTS_V2

CONTENT_MAX = 2000
EMBEDS_MAX = 10
EMBED_TOTAL_MAX = 6000
EMBED_TITLE_MAX = 256
EMBED_DESCRIPTION_MAX = 4096
EMBED_FIELDS_MAX = 25
FIELD_NAME_MAX = 256
FIELD_VALUE_MAX = 1024
FOOTER_MAX = 2048
AUTHOR_NAME_MAX = 256
ATTACHMENTS_MAX = 10
# One request's files together, at the default upload limit (docs/discord-platform.md, MSG).
REQUEST_LIMIT = 25 * 1024 * 1024
ROWS_MAX = 5
ROW_BUTTONS_MAX = 5
CUSTOM_ID_MAX = 100
LABEL_MAX = 80
V2_COMPONENTS_MAX = 40
SELECT_OPTIONS_MAX = 25
EMBED_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".gif")


def embed_size(embed: dict[str, Any]) -> int:
    """The characters Discord counts toward the 6000 total."""
    total = len(embed.get("title") or "") + len(embed.get("description") or "")
    total += len((embed.get("footer") or {}).get("text") or "")
    total += len((embed.get("author") or {}).get("name") or "")
    for f in embed.get("fields") or []:
        total += len(f.get("name") or "") + len(f.get("value") or "")
    return total


def check_embeds(embeds: list[dict[str, Any]], errs: FormErrors) -> None:
    if len(embeds) > EMBEDS_MAX:
        errs.add(("embeds",), "BASE_TYPE_MAX_LENGTH", f"Must be {EMBEDS_MAX} or fewer in length.")
    for i, embed in enumerate(embeds):
        at: Path = ("embeds", i)
        errs.max_length((*at, "title"), embed.get("title"), EMBED_TITLE_MAX)
        errs.max_length((*at, "description"), embed.get("description"), EMBED_DESCRIPTION_MAX)
        errs.max_length((*at, "footer", "text"), (embed.get("footer") or {}).get("text"), FOOTER_MAX)
        errs.max_length((*at, "author", "name"), (embed.get("author") or {}).get("name"), AUTHOR_NAME_MAX)
        fields = embed.get("fields") or []
        if len(fields) > EMBED_FIELDS_MAX:
            errs.add((*at, "fields"), "BASE_TYPE_MAX_LENGTH", f"Must be {EMBED_FIELDS_MAX} or fewer in length.")
        for j, f in enumerate(fields):
            for key, limit in (("name", FIELD_NAME_MAX), ("value", FIELD_VALUE_MAX)):
                if not f.get(key):
                    errs.add((*at, "fields", j, key), "BASE_TYPE_REQUIRED", "This field is required")
                errs.max_length((*at, "fields", j, key), f.get(key), limit)
    if sum(embed_size(e) for e in embeds) > EMBED_TOTAL_MAX:
        errs.add(("embeds",), "MAX_EMBED_SIZE_EXCEEDED", f"Embed size exceeds maximum size of {EMBED_TOTAL_MAX}")


def embed_attachment_refs(embeds: list[dict[str, Any]]) -> list[tuple[int, str, str, str]]:
    """Every `attachment://name` an embed points at: (embed index, object key, url key, name)."""
    refs: list[tuple[int, str, str, str]] = []
    for i, embed in enumerate(embeds):
        for key, url_key in (("image", "url"), ("thumbnail", "url"), ("author", "icon_url"), ("footer", "icon_url")):
            url = (embed.get(key) or {}).get(url_key)
            if isinstance(url, str) and url.startswith("attachment://"):
                refs.append((i, key, url_key, url.removeprefix("attachment://")))
    return refs


def _check_custom_id(path: Path, custom_id: Any, seen: set[str], errs: FormErrors) -> None:
    if not isinstance(custom_id, str) or not 1 <= len(custom_id) <= CUSTOM_ID_MAX:
        errs.length_between((*path, "custom_id"), custom_id if isinstance(custom_id, str) else "", 1, CUSTOM_ID_MAX)
        return
    if custom_id in seen:
        errs.add((*path, "custom_id"), "COMPONENT_CUSTOM_ID_DUPLICATED", "Component custom id cannot be duplicated")
    seen.add(custom_id)


def _check_item(path: Path, item: dict[str, Any], seen: set[str], errs: FormErrors) -> None:
    kind = item.get("type")
    if kind == 2:  # button
        style = item.get("style")
        if style == 5:
            if not item.get("url"):
                errs.add((*path, "url"), "BASE_TYPE_REQUIRED", "This field is required")
        elif style != 6:
            _check_custom_id(path, item.get("custom_id"), seen, errs)
        errs.max_length((*path, "label"), item.get("label"), LABEL_MAX)
    elif kind in (3, 5, 6, 7, 8):  # selects
        _check_custom_id(path, item.get("custom_id"), seen, errs)
        if len(item.get("options") or []) > SELECT_OPTIONS_MAX:
            errs.add((*path, "options"), "BASE_TYPE_MAX_LENGTH", f"Must be {SELECT_OPTIONS_MAX} or fewer in length.")
        errs.max_length((*path, "placeholder"), item.get("placeholder"), 150)


def _count(components: list[dict[str, Any]]) -> int:
    total = 0
    for c in components:
        total += 1 + _count(c.get("components") or [])
        if isinstance(c.get("accessory"), dict):
            total += 1
    return total


def check_components(components: list[dict[str, Any]], flags: int, errs: FormErrors) -> None:
    seen: set[str] = set()
    if flags & COMPONENTS_V2:
        if _count(components) > V2_COMPONENTS_MAX:
            errs.add(("components",), "BASE_TYPE_MAX_LENGTH", f"Must be {V2_COMPONENTS_MAX} or fewer in length.")

        def walk(items: list[dict[str, Any]], path: Path) -> None:
            for i, item in enumerate(items):
                _check_item((*path, i), item, seen, errs)
                walk(item.get("components") or [], (*path, i, "components"))
                if isinstance(item.get("accessory"), dict):
                    _check_item((*path, i, "accessory"), item["accessory"], seen, errs)

        walk(components, ("components",))
        return
    if len(components) > ROWS_MAX:
        errs.add(("components",), "BASE_TYPE_MAX_LENGTH", f"Must be {ROWS_MAX} or fewer in length.")
    for i, row in enumerate(components):
        if row.get("type") != 1:
            errs.add(("components", i, "type"), "UNION_TYPE_CHOICES", 'Value of field "type" must be one of (1,).')
            continue
        items = row.get("components") or []
        if not items:
            errs.add(("components", i, "components"), "BASE_TYPE_MIN_LENGTH", "Must be 1 or more in length.")
        if len(items) > ROW_BUTTONS_MAX:
            errs.add(("components", i, "components"), "BASE_TYPE_MAX_LENGTH", "Must be 5 or fewer in length.")
        if any(item.get("type") != 2 for item in items) and len(items) > 1:
            errs.add(
                ("components", i, "components"),
                "COMPONENT_LAYOUT_WIDTH_EXCEEDED",
                "The specified component exceeds the maximum width",
            )
        for j, item in enumerate(items):
            _check_item(("components", i, "components", j), item, seen, errs)


def check_message_fields(data: dict[str, Any], errs: FormErrors) -> None:
    content = data.get("content")
    if content is not None and not isinstance(content, str):
        errs.add(("content",), "BASE_TYPE_STRING", "Could not interpret value as string.")
    elif content is not None:
        errs.max_length(("content",), content, CONTENT_MAX)
    check_embeds(data.get("embeds") or [], errs)
    check_components(data.get("components") or [], int(data.get("flags") or 0), errs)
    allowed = data.get("allowed_mentions")
    if isinstance(allowed, dict):
        parse = allowed.get("parse") or []
        for kind in ("users", "roles"):
            if kind in parse and allowed.get(kind):
                errs.add(
                    ("allowed_mentions", kind),
                    "ALLOWED_MENTIONS_PARSE_EXCLUSIVE",
                    f'parse:["{kind}"] and {kind}: [ids...] are mutually exclusive.',
                )
            if len(allowed.get(kind) or []) > 100:
                errs.add(("allowed_mentions", kind), "BASE_TYPE_MAX_LENGTH", "Must be 100 or fewer in length.")


def check_modal(data: dict[str, Any], errs: FormErrors) -> None:
    """Type 9 MODAL: title 1-45, custom_id 1-100, 1-5 top-level components, text inputs with labels <= 45."""
    errs.length_between(("title",), data.get("title"), 1, 45)
    _check_custom_id((), data.get("custom_id"), set(), errs)
    components = data.get("components") or []
    if not 1 <= len(components) <= 5:
        errs.add(("components",), "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 5 in length.")
    seen: set[str] = set()
    for i, top in enumerate(components):
        inner = top.get("components") or ([top["component"]] if isinstance(top.get("component"), dict) else [])
        if top.get("type") == 18:
            errs.length_between(("components", i, "label"), top.get("label"), 1, 45)
        for j, item in enumerate(inner):
            path: Path = ("components", i, "components", j) if top.get("type") == 1 else ("components", i, "component")
            _check_custom_id(path, item.get("custom_id"), seen, errs)
            if item.get("type") == 4:
                errs.max_length((*path, "label"), item.get("label"), 45)
                errs.max_length((*path, "value"), item.get("value"), 4000)
