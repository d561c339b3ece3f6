"""Config validation: bad registry entries fail at load with the entry and field named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from deployments.registry import ConfigError, load_args

GOOD = {"name": "tiny", "model_id": "models/code4me-tiny", "family": "code4me"}


def test_good_entry_resolves_local_path_to_absolute() -> None:
    args = load_args({"models": [GOOD]})
    source = args.models[0].resolved_source()
    assert source.startswith("/") and source.endswith("models/code4me-tiny")


def test_hub_id_is_kept() -> None:
    args = load_args(
        {"models": [{**GOOD, "model_id": "deepseek-ai/deepseek-coder-1.3b-base", "family": "deepseek-coder"}]}
    )
    assert args.models[0].resolved_source() == "deepseek-ai/deepseek-coder-1.3b-base"


@pytest.mark.parametrize(
    "entry, words",
    [
        ({**GOOD, "family": "gpt-17"}, ["models[0] (tiny)", "'family'", "unknown family 'gpt-17'"]),
        ({**GOOD, "model_id": "./no/such/dir"}, ["models[0] (tiny)", "'model_id'", "does not exist"]),
        ({**GOOD, "model_id": "/abs/missing"}, ["'model_id'", "does not exist"]),
        ({**GOOD, "num_gpus": -1}, ["models[0] (tiny)", "'num_gpus'"]),
        ({**GOOD, "max_ongoing_requests": 0}, ["'max_ongoing_requests'"]),
        ({**GOOD, "generation": {"max_new_tokens": "many"}}, ["'generation.max_new_tokens'"]),
        ({**GOOD, "generation": {"time_budget_s": 0}}, ["'generation.time_budget_s'"]),
        (
            {**GOOD, "autoscaling_config": {"min_replicas": 3, "max_replicas": 1}},
            ["'autoscaling_config'", "max_replicas"],
        ),
        ({**GOOD, "num_replicas": 2, "autoscaling_config": {"max_replicas": 2}}, ["not both"]),
        ({**GOOD, "name": "bad name!"}, ["'name'"]),
        ({**GOOD, "tempreature": 0.2}, ["'tempreature'", "Extra inputs"]),
        ({"model_id": "x/y", "family": "code4me"}, ["'name'", "Field required"]),
    ],
)
def test_bad_entries_name_entry_and_field(entry: dict, words: list[str]) -> None:
    with pytest.raises(ConfigError) as exc:
        load_args({"models": [entry]})
    for w in words:
        assert w in str(exc.value)


def test_second_entry_is_named_by_index_and_name() -> None:
    with pytest.raises(ConfigError) as exc:
        load_args({"models": [GOOD, {**GOOD, "name": "other", "family": "nope"}]})
    assert "models[1] (other)" in str(exc.value)


def test_empty_registry_and_duplicates_are_refused() -> None:
    with pytest.raises(ConfigError, match="models"):
        load_args({"models": []})
    with pytest.raises(ConfigError, match="duplicate model names: tiny"):
        load_args({"models": [GOOD, GOOD]})
    with pytest.raises(ConfigError, match="duplicate model ids: 7"):
        load_args({"models": [{**GOOD, "id": 7}, {**GOOD, "name": "other", "id": 7}]})


@pytest.mark.parametrize("bad", [0, -1, 1000, "one"])
def test_pinned_ids_are_1_to_999(bad: object) -> None:
    with pytest.raises(ConfigError, match=r"models\[0\] \(tiny\) field 'id'"):
        load_args({"models": [{**GOOD, "id": bad}]})


@pytest.mark.parametrize(
    "config", sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml")), ids=lambda p: p.name
)
def test_every_shipped_serve_config_validates(config: Path) -> None:
    raw = yaml.safe_load(config.read_text())
    (app,) = raw["applications"]
    assert app["import_path"] == "serve.builder:build_app"
    args = load_args(app["args"])
    # One default completion model and one default chat model, under the ids the plugin's plugin.conf sends.
    assert sum(m.is_default for m in args.models if not m.is_chat) == 1
    assert sum(m.is_default for m in args.models if m.is_chat) == 1
    ids = {m.id: m for m in args.models if m.id is not None}
    assert not ids[1].is_chat and ids[1].is_default
    assert ids[3].is_chat and ids[3].is_default
    # The default model was trained on 256-token windows (models/code4me-tiny/training_stats.json): its
    # prompt plus completion are served within them.
    (tiny,) = [m for m in args.models if m.name == "code4me-tiny"]
    trained = json.loads((Path(tiny.resolved_source()) / "training_stats.json").read_text())["seq_len"]
    assert tiny.max_context_tokens == trained
