"""The model registry: vetted descriptions, the operator's file, checks of a member's choices, request bodies."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import pytest

from bot.jobs.orders import order
from bot.model_registry import (
    Choices,
    Kind,
    RegistryError,
    build_request,
    check_choices,
    load_registry,
    vetted_models,
)
from bot.model_registry.schema import differences, input_schema
from bot.model_spec import InvalidInputError
from bot.settings import DEFAULT_MODEL
from storage.models import JobOrigin

SIZE_MODEL = """
[[model]]
id = "acme/sizer/text-to-image"
name = "Acme Sizer"
kind = "text-to-image"
price_usd = 0.01
[model.inputs]
prompt = "text"
aspect_ratio = { field = "size", values = { "1:1" = "1024*1024", "16:9" = "1344*768" } }
count = { field = "number_of_images", max = 3 }
fixed = { output_format = "png" }
"""


def test_vetted_set_has_the_default_an_edit_model_and_another_text_model() -> None:
    registry = load_registry(DEFAULT_MODEL)
    assert registry.default.id == DEFAULT_MODEL
    kinds = [model.kind for model in registry.offered]
    assert kinds.count(Kind.TEXT_TO_IMAGE) >= 2
    assert Kind.IMAGE_EDIT in kinds


def test_operator_file_adds_and_replaces_models(tmp_path: Path) -> None:
    path = tmp_path / "models.toml"
    replaced = SIZE_MODEL + '\n[[model]]\nid = "google/nano-banana-2/edit"\nname = "Old"\nkind = "image-edit"\n'
    replaced += 'price_usd = 1\noffered = false\n[model.inputs]\nimage = { field = "image" }\n'
    path.write_text(replaced)
    registry = load_registry(DEFAULT_MODEL, path)
    sizer = registry.get("acme/sizer/text-to-image")
    assert sizer is not None
    assert sizer.ratios == ("1:1", "16:9")
    assert sizer.max_count == 3
    assert registry.name("google/nano-banana-2/edit") == "Old"
    assert "google/nano-banana-2/edit" not in [model.id for model in registry.offered]
    assert registry.name("gone/model/x") == "gone/model/x"


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("[[model]]\nid = 'a/b'\nname = 'X'\nkind = 'image-edit'\nprice_usd = 1\n", "needs inputs.image"),
        ("[[model]]\nid = 'a/b'\nname = 'X'\nkind = 'paint'\nprice_usd = 1\n", "a/b: kind"),
        ("[[model]]\nid = 'a/b'\nname = 'X'\nkind = 'text-to-image'\nprice_usd = 1\nspeed = 2\n", "speed"),
        (
            "[[model]]\nid = 'a/b'\nname = 'X'\nkind = 'text-to-image'\nprice_usd = 1\n"
            "[model.inputs]\naspect_ratio = { field = 'ar', values = ['7:5'] }\n",
            "unknown aspect ratio(s) 7:5",
        ),
        (
            "[[model]]\nid = 'a/b'\nname = 'X'\nkind = 'text-to-image'\nprice_usd = 1\n"
            "[model.inputs]\nseed = {field='prompt'}",
            "named twice",
        ),
        ("model = 3", "array of tables"),
        ("[[model]\n", "not valid TOML"),
    ],
)
def test_a_bad_models_file_is_refused_with_where_and_why(tmp_path: Path, text: str, says: str) -> None:
    path = tmp_path / "models.toml"
    path.write_text(text)
    with pytest.raises(RegistryError, match=r"models\.toml") as caught:
        load_registry(DEFAULT_MODEL, path)
    assert says in str(caught.value)


def test_the_default_must_be_an_offered_text_model(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="not an offered model"):
        load_registry("nobody/none")
    with pytest.raises(RegistryError, match="edits images"):
        load_registry("google/nano-banana-2/edit")
    with pytest.raises(RegistryError, match="cannot read"):
        load_registry(DEFAULT_MODEL, tmp_path / "missing.toml")


@pytest.mark.parametrize(
    ("model_id", "choices", "option"),
    [
        (DEFAULT_MODEL, Choices(image=True), "image"),
        ("google/nano-banana-2/edit", Choices(), "image"),
        ("google/nano-banana-2/text-to-image", Choices(ratio="3:1"), "aspect_ratio"),
        ("google/nano-banana-2/text-to-image", Choices(seed=5), "seed"),
        (DEFAULT_MODEL, Choices(count=2), "count"),
        ("google/nano-banana-2/text-to-image", Choices(count=5), "count"),
    ],
)
def test_an_option_the_model_does_not_support_is_refused(model_id: str, choices: Choices, option: str) -> None:
    model = load_registry(DEFAULT_MODEL).get(model_id)
    assert model is not None
    with pytest.raises(InvalidInputError) as caught:
        check_choices(model, choices)
    assert caught.value.option == option
    assert model.name in str(caught.value)


def test_supported_choices_pass() -> None:
    registry = load_registry(DEFAULT_MODEL)
    check_choices(registry.default, Choices(ratio="3:1", seed=7, count=1))
    edit = registry.get("google/nano-banana-2/edit")
    assert edit is not None
    check_choices(edit, Choices(ratio="16:9", count=4, image=True))


def test_every_vetted_request_is_valid_against_its_own_schema_and_names_only_described_fields() -> None:
    for model in vetted_models():
        body = build_request(
            model, prompt="a fox", ratio=model.ratios[-1], seed=9, count=model.max_count, image_url="https://x/y.png"
        )
        jsonschema.validate(body, input_schema(model))
        assert set(body) <= model.inputs.field_names
        assert body[model.inputs.prompt] == "a fox"


def test_a_size_model_sends_its_own_values(tmp_path: Path) -> None:
    path = tmp_path / "m.toml"
    path.write_text(SIZE_MODEL)
    sizer = load_registry(DEFAULT_MODEL, path).get("acme/sizer/text-to-image")
    assert sizer is not None
    body = build_request(sizer, prompt="p", ratio="16:9", seed=1, count=3)
    assert body == {"output_format": "png", "text": "p", "size": "1344*768", "number_of_images": 3}
    assert build_request(sizer, prompt="p", ratio=None, seed=1)["size"] == "1024*1024"


def test_differences_name_what_upstream_changed() -> None:
    model = load_registry(DEFAULT_MODEL).default
    schema = input_schema(model)
    assert differences(model, schema) == []
    changed = {
        "required": ["prompt", "style"],
        "properties": {
            "prompt": {"type": "string"},
            "aspect_ratio": {"type": "string", "enum": ["1:1", "16:9"]},
            "seed": {"type": "integer", "minimum": 0, "maximum": 1000},
        },
    }
    found = differences(model, changed)
    assert "`style` is required upstream but not described" in found
    assert any("aspect_ratio` upstream does not allow 3:1" in item for item in found)
    assert any("`seed` maximum is 1000 upstream" in item for item in found)
    assert (
        differences(model, {"properties": {"prompt": {"type": "integer"}}})[0]
        == "`prompt` is integer upstream, string here"
    )
    assert differences(model, {}) == ["RunComfy's schema lists no properties"]


SMALL_SEEDS = """
[[model]]
id = "acme/small-seeds/text-to-image"
name = "Acme Small Seeds"
kind = "text-to-image"
price_usd = 0.01
[model.inputs]
seed = { field = "seed", max = 65535 }
"""


def test_a_seed_past_the_models_own_largest_is_refused_and_random_seeds_stay_within_it(tmp_path: Path) -> None:
    (tmp_path / "models.toml").write_text(SMALL_SEEDS)
    model = load_registry(DEFAULT_MODEL, tmp_path / "models.toml").get("acme/small-seeds/text-to-image")
    assert model is not None
    check_choices(model, Choices(seed=65535))
    with pytest.raises(InvalidInputError) as caught:
        check_choices(model, Choices(seed=65536))
    assert caught.value.option == "seed"
    assert "65,535" in str(caught.value)
    assert model.name in str(caught.value)
    seeds = {order(model, prompt="a fox", ratio=None, seed=None, count=1, origin=JobOrigin()).seed for _ in range(200)}
    assert max(seeds) <= 65535


def test_the_example_file_in_docs_models_md_loads(tmp_path: Path) -> None:
    text = (Path(__file__).parents[2] / "docs/models.md").read_text()
    example = text.split("```toml\n", 1)[1].split("```", 1)[0]
    (tmp_path / "models.toml").write_text(example)
    assert load_registry(DEFAULT_MODEL, tmp_path / "models.toml").get("acme/sizer/text-to-image") is not None
