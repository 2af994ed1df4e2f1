"""The doctor's look at the model registry: each offered model against what RunComfy's API says about it.

`GET /v1/models/{id}` answers with the model's catalog entry, its input
schema and base price (docs/runcomfy-api.md, "client" evidence). Where it
carries a schema, the description is compared with it
(`bot.model_registry.schema.differences`) and every difference is named, so
an operator learns that a model changed its inputs before a member meets a
422. A model RunComfy does not know, a price that differs, or a models file
that does not load is a ✗ with what to do.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from bot.model_registry import ModelDescription, RegistryError, load_registry
from bot.model_registry.schema import differences
from bot.runcomfy import InvalidModelError, ModelInfo, RunComfyClient, RunComfyError

if TYPE_CHECKING:
    from bot.doctor import Report
    from bot.settings import Settings

MODELS_FIX = "correct the model's description in RUNCOMFY_MODELS_FILE (docs/models.md), or set offered = false"


def published_schema(info: ModelInfo) -> Mapping[str, Any] | None:
    """The input schema of a catalog entry, wherever it sits (`input_schema`, or `schema.input`)."""
    extra = info.model_extra or {}
    for candidate in (extra.get("input_schema"), (extra.get("schema") or {}).get("input")):
        if isinstance(candidate, Mapping) and isinstance(candidate.get("properties"), Mapping):
            return candidate
    return None


def compare(model: ModelDescription, info: ModelInfo) -> tuple[list[str], bool]:
    """What differs between the description and RunComfy's entry, and whether a schema was there to compare."""
    schema = published_schema(info)
    found = differences(model, schema) if schema is not None else []
    price = info.base_price_usd
    if price is not None and abs(price - model.price_usd) > 1e-9:
        found.append(f"the base price is ${price:g} upstream, ${model.price_usd:g} here")
    return found, schema is not None


async def check_models(client: RunComfyClient, settings: Settings, report: Report) -> None:
    try:
        registry = load_registry(settings.runcomfy_model, settings.runcomfy_models_file)
    except RegistryError as error:
        report.fail(f"Models: {error}", "fix the models file or RUNCOMFY_MODEL (docs/models.md)")
        return
    for model in registry.offered:
        label = f"Model {model.name} ({model.id})"
        try:
            info = await client.model_info(model.id)
        except InvalidModelError:
            report.fail(f"{label}: RunComfy does not know this model", MODELS_FIX)
            continue
        except RunComfyError as error:
            report.fail(f"{label}: no usable answer ({error.message})", "try again in a few minutes")
            continue
        found, compared = compare(model, info)
        if found:
            report.fail(f"{label}: " + "; ".join(found), MODELS_FIX)
        elif compared:
            report.ok(f"{label}: matches RunComfy's schema and price")
        else:
            report.ok(f"{label}: known to RunComfy (it publishes no input schema to compare)")
