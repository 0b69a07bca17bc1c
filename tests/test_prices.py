"""Price table: offline loading without importing litellm, alias resolution, vectorised cost."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from router.data.paths import data_dir
from router.data.prices import PriceTable, fill_cost_from_tokens, litellm_price_file
from router.data.schema import Outcomes
from router.errors import ConfigError, SchemaError, SourceNotFoundError, UnknownModelError


@pytest.fixture(scope="module")
def table() -> PriceTable:
    return PriceTable.load()


#: names used in our data -> (USD per input token, USD per output token)
KNOWN = {
    "gpt-4-1106-preview": (1e-05, 3e-05),
    "gpt-3.5-turbo-1106": (1e-06, 2e-06),
    "claude-v2": (8e-06, 2.4e-05),
    "claude-v1": (8e-06, 2.4e-05),
    "claude-instant-v1": (8e-07, 2.4e-06),
    "meta/llama-2-70b-chat": (6.5e-07, 2.75e-06),
    "meta/code-llama-instruct-34b-chat": (1e-06, 1e-06),
    "mistralai/mistral-7b-chat": (1.5e-07, 1.5e-07),
    "mistralai/mixtral-8x7b-chat": (6e-07, 6e-07),
    "zero-one-ai/Yi-34B-Chat": (9e-07, 9e-07),
    "mistralai/Mixtral-8x7B-Instruct-v0.1": (6e-07, 6e-07),
    "claude-3-haiku-20240307": (2.5e-07, 1.25e-06),
    "GPT-4-1106-PREVIEW": (1e-05, 3e-05),  # case-insensitive
    "openai/gpt-4-1106-preview": (1e-05, 3e-05),  # provider prefix stripped
    "Mixtral-8x7B-Instruct-v0.1": (6.3e-07, 6.3e-07),  # suffix match: shortest priced key (ovhcloud/...)
}


@pytest.mark.parametrize("model", sorted(KNOWN))
def test_lookup_resolves_names_in_our_data(table: PriceTable, model: str) -> None:
    assert table.lookup(model) == pytest.approx(KNOWN[model])
    assert model in table


def test_unknown_model_says_to_use_the_override_file(table: PriceTable) -> None:
    with pytest.raises(UnknownModelError, match=r"No price known for model 'WizardLM/WizardLM-13B-V1.2'\. "
                                                r"Add it to the price override file"):
        table.lookup("WizardLM/WizardLM-13B-V1.2")


def test_override_file(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({
        "WizardLM/WizardLM-13B-V1.2": {"input_cost_per_token": 3e-7, "output_cost_per_token": 3e-7},
        "gpt-4-1106-preview": {"input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6},
    }))
    t = PriceTable.load(override_path=path)
    assert t.lookup("WizardLM/WizardLM-13B-V1.2") == (3e-7, 3e-7)
    assert t.lookup("gpt-4-1106-preview") == (1e-6, 2e-6)  # overrides win
    with pytest.raises(UnknownModelError, match=str(path)):
        t.lookup("no-such-model-xyz")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", r"prices\.json: not valid JSON"),
        ("[1, 2]", r"prices\.json: expected a JSON object"),
        ('{"m": {"input_cost_per_token": 1e-6}}', r"model 'm' needs both 'input_cost_per_token' and"),
        ('{"m": {"input_cost_per_token": -1, "output_cost_per_token": 0}}', r"price must be a finite number >= 0"),
        ('{"m": {"input_cost_per_token": "x", "output_cost_per_token": 0}}', r"price must be a finite number >= 0"),
    ],
)
def test_bad_override_files(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "prices.json"
    path.write_text(content)
    with pytest.raises(SchemaError, match=message):
        PriceTable.load(override_path=path)


def test_missing_override_file(tmp_path: Path) -> None:
    with pytest.raises(SourceNotFoundError, match="price file does not exist"):
        PriceTable.load(override_path=tmp_path / "nope.json")


def test_cost_is_vectorised(table: PriceTable) -> None:
    tin = np.array([[100, 0], [1000, 10]])
    tout = np.array([[10, 0], [0, 10]])
    got = table.cost("gpt-4-1106-preview", tin, tout)
    assert got.shape == (2, 2)
    np.testing.assert_allclose(got, tin * 1e-5 + tout * 3e-5)
    with pytest.raises(ConfigError, match="token counts must be finite and >= 0"):
        table.cost("gpt-4-1106-preview", [-1], [0])
    with pytest.raises(ConfigError, match=r"token matrices must both have shape \(n, 2\)"):
        table.cost_matrix(["a", "b"], np.ones((3, 1)), np.ones((3, 1)))


def test_fill_cost_from_tokens_needs_tokens(table: PriceTable) -> None:
    o = Outcomes(prompt_ids=["a"], prompts=["x"], models=["gpt-4-1106-preview"], quality=[[1]], cost=[[0]])
    with pytest.raises(SchemaError, match="input_tokens and output_tokens are both needed"):
        fill_cost_from_tokens(o, table)


@pytest.mark.data
def test_fill_cost_reproduces_routerarena_logged_cost(table: PriceTable) -> None:
    try:
        data_dir()
    except SourceNotFoundError as exc:
        pytest.skip(f"public routing data not available: {exc}")
    from router.data.loaders import load_routerarena

    o = load_routerarena()
    filled = fill_cost_from_tokens(o, table)
    assert filled.cost_kind == "tokens" and o.cost_kind == "logged"
    haiku = o.model_index("claude-3-haiku-20240307")[0]
    # same price as RouterArena used for claude-3-haiku; gemini-2.0-flash differs (litellm has only the
    # Vertex price 0.15/0.60 per M, RouterArena used 0.10/0.40)
    np.testing.assert_allclose(filled.cost[:, haiku], o.cost[:, haiku], rtol=1e-9)


def test_price_file_is_found_and_litellm_is_not_imported() -> None:
    assert litellm_price_file().name == "model_prices_and_context_window_backup.json"
    code = ("import sys; from router.data.prices import PriceTable; t = PriceTable.load(); "
            "assert len(t) > 1000; assert 'litellm' not in sys.modules, 'litellm imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])
