"""The emulator's checks of a submit's inputs: the body against its model's JSON schema, and an edit's image links.

RunComfy answers a body that does not match the model's schema with 422 and
a FastAPI-style `detail` naming the field (docs/runcomfy-api.md, Errors), and
fetches an edit's input image itself after accepting the job, so a link that
does not answer makes the job fail there, paid or not. The emulator does
both, so the bot's own checks are what keep members from those outcomes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from jsonschema import Draft202012Validator

FETCH_SECONDS = 5.0


@dataclass
class InputCheck:
    """What fetching input images found, in order: (url, HTTP status or 0 when unreachable)."""

    fetched: list[tuple[str, int]] = field(default_factory=list)


def body_errors(schema: Mapping[str, Any], body: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """Each problem of `body` as (field, message, kind), the first one first; empty when it is valid."""
    found: list[tuple[str, str, str]] = []
    properties = schema.get("properties", {})
    for error in sorted(Draft202012Validator(schema).iter_errors(body), key=lambda error: list(error.path)):
        if error.validator == "additionalProperties":
            found.extend(
                (name, "Extra inputs are not permitted", "extra_forbidden") for name in body if name not in properties
            )
        elif error.validator == "required":
            found.extend((name, "Field required", "missing") for name in schema.get("required", []) if name not in body)
        else:
            name = str(error.path[0]) if error.path else "body"
            found.append((name, error.message, str(error.validator)))
    return found


async def fetch_inputs(check: InputCheck, urls: Sequence[Any]) -> str | None:
    """Fetch every input image as RunComfy would; why the job fails when one cannot be had, else None."""
    if not urls:
        return None
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=FETCH_SECONDS)) as session:
        for url in urls:
            try:
                async with session.get(str(url)) as response:
                    await response.read()
                    status = response.status
            except (aiohttp.ClientError, TimeoutError):
                status = 0
            check.fetched.append((str(url), status))
            if status != 200:
                return f"Failed to download the input image (HTTP {status or 'unreachable'})"
    return None
