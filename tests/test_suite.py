"""Suite schema: good files load, bad ones fail naming the file, the key and the closest valid name."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from benchmark.cli import main
from benchmark.errors import SuiteError
from benchmark.fields import eps_label, parse_eps
from benchmark.suite.loading import load_suite
from helpers import GOOD, write

ROOT = Path(__file__).resolve().parents[1]

def problems(tmp_path: Path, text: str) -> str:
    p = write(tmp_path, text)
    with pytest.raises(SuiteError) as info:
        load_suite(p)
    msg = str(info.value)
    assert str(p) in msg
    return msg


@pytest.mark.parametrize("shipped", sorted((ROOT / "suites").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_suites_validate(shipped: Path) -> None:
    suite = load_suite(shipped)
    assert suite.models and suite.evaluations


def test_good_suite_parses_fractions_and_sorts_eps(tmp_path: Path) -> None:
    suite = load_suite(write(tmp_path, GOOD))
    pgd = suite.evaluations[1]
    assert pgd.eps == pytest.approx((2 / 255, 8 / 255, 0.1))
    assert suite.data.n_examples == 20
    assert suite.evaluations[0].eps_values == (0.0,)


@pytest.mark.parametrize("value,expected", [("8/255", 8 / 255), (0.5, 0.5), ("0.25", 0.25), (0, 0.0), ("1e-2", 0.01)])
def test_parse_eps(value: object, expected: float) -> None:
    assert parse_eps(value) == pytest.approx(expected)


@pytest.mark.parametrize("value", ["-1/255", -0.1, "abc", "1/0", True, None, float("nan")])
def test_parse_eps_rejects(value: object) -> None:
    with pytest.raises(ValueError):
        parse_eps(value)


def test_eps_label() -> None:
    assert eps_label(8 / 255) == "8/255"
    assert eps_label(0.1) == "0.1"
    assert not math.isnan(float(eps_label(0.123456)))


def test_unknown_key_suggests_closest(tmp_path: Path) -> None:
    msg = problems(tmp_path, GOOD.replace("steps: 3", "stpes: 3"))
    assert "evaluations[1].stpes: unknown key 'stpes'. Did you mean 'steps'?" in msg


def test_unknown_top_level_key(tmp_path: Path) -> None:
    msg = problems(tmp_path, GOOD + "metrix: [ece]\n")
    assert "metrix: unknown key 'metrix'. Did you mean 'metrics'?" in msg


def test_unknown_attack_dataset_arch_metric(tmp_path: Path) -> None:
    text = GOOD.replace("attack: pgd", "attack: pgdd").replace("dataset: digits", "dataset: digitz") \
        .replace("arch: small_cnn", "arch: smal_cnn") + "metrics: [ecee]\n"
    msg = problems(tmp_path, text)
    assert "evaluations[1].attack: unknown attack 'pgdd'. Did you mean 'pgd'?" in msg
    assert "data.dataset: unknown dataset 'digitz'. Did you mean 'digits'?" in msg
    assert "models.m.recipe.arch: unknown architecture 'smal_cnn'. Did you mean 'small_cnn'?" in msg
    assert "metrics: unknown metric 'ecee'. Did you mean 'ece'?" in msg


def test_negative_eps_and_bad_fraction(tmp_path: Path) -> None:
    msg = problems(tmp_path, GOOD.replace("[8/255, 0.1, 2/255]", "[-0.1]"))
    assert "evaluations[1].eps" in msg and ">= 0" in msg
    msg = problems(tmp_path, GOOD.replace("[8/255, 0.1, 2/255]", "eight"))
    assert "evaluations[1].eps" in msg and "fraction like '8/255'" in msg


def test_eps_out_of_range(tmp_path: Path) -> None:
    msg = problems(tmp_path, GOOD.replace("[8/255, 0.1, 2/255]", "[1.5]"))
    assert "evaluations[1].eps: Linf eps 1.5 exceeds 1" in msg
    # An L2 ball of radius 10 is larger than the 8x8 unit cube's diagonal (8).
    msg = problems(tmp_path, GOOD.replace("[8/255, 0.1, 2/255]", "[10]\n    norm: L2"))
    assert "L2 eps 10 exceeds 8" in msg


def test_transfer_source_must_be_a_model(tmp_path: Path) -> None:
    text = GOOD + "  - attack: transfer\n    source: mm\n    eps: 0.1\n"
    msg = problems(tmp_path, text)
    assert "evaluations[2].source: transfer source 'mm' is not a model of this suite. Did you mean 'm'?" in msg


def test_model_without_source_and_wrong_type(tmp_path: Path) -> None:
    msg = problems(tmp_path, GOOD.replace("m: {recipe: {kind: standard, arch: small_cnn, epochs: 1}}", "m: {arch: x}"))
    assert "models.m: a model needs exactly one of 'checkpoint', 'robustbench' or 'recipe'" in msg
    msg = problems(tmp_path, GOOD.replace("epochs: 1", "epochs: many"))
    assert "models.m.recipe.epochs" in msg and "integer" in msg


def test_recipe_kind_and_adversarial_block(tmp_path: Path) -> None:
    msg = problems(tmp_path, GOOD.replace("kind: standard", "kind: at"))
    assert "models.m.recipe" in msg and "needs an 'adversarial' block" in msg
    msg = problems(tmp_path, GOOD.replace("kind: standard", "kind: standrd"))
    assert "unknown recipe 'standrd'. Did you mean 'standard'?" in msg


def test_literal_choices_get_suggestion(tmp_path: Path) -> None:
    msg = problems(tmp_path, GOOD.replace("steps: 3", "steps: 3\n    norm: Linff"))
    assert "evaluations[1].norm: invalid value 'Linff'. Did you mean 'Linf'?" in msg


def test_yaml_syntax_error_names_line(tmp_path: Path) -> None:
    msg = problems(tmp_path, "name: t\n  bad: [\n")
    assert "line 2" in msg and "invalid YAML" in msg


def test_missing_file() -> None:
    with pytest.raises(SuiteError, match="nope.yaml: file not found"):
        load_suite("nope.yaml")


def test_duplicate_evaluation_names(tmp_path: Path) -> None:
    msg = problems(tmp_path, GOOD + "  - attack: clean\n")
    assert "evaluation name 'clean' is used twice" in msg


def test_overrides(tmp_path: Path) -> None:
    suite = load_suite(write(tmp_path, GOOD), ["evaluations[1].steps=7", "data.n_examples=5", "device=cpu"])
    assert suite.evaluations[1].steps == 7 and suite.data.n_examples == 5 and suite.device == "cpu"
    with pytest.raises(SuiteError, match="no list item 9"):
        load_suite(write(tmp_path, GOOD), ["evaluations[9].steps=7"])



def test_validate_loads_no_data_or_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import benchmark.data as data
    import benchmark.models.checkpoint as ckpt

    def boom(*a: object, **k: object) -> None:
        raise AssertionError("validate must not load anything")

    monkeypatch.setattr(data, "load_dataset", boom)
    monkeypatch.setattr(ckpt, "load_state_dict", boom)
    assert main(["validate", str(ROOT / "suites" / "cifar10.yaml")]) == 0


@pytest.mark.parametrize("old,new,key", [
    ("name: t", "name: '..'", "name"),
    ("name: t", "name: '.'", "name"),
    ("  m: {recipe", "  '..': {recipe", "models"),
    ("  - attack: pgd\n", "  - attack: pgd\n    name: worst-case\n", "evaluations[1].name"),
])
def test_names_that_are_paths_or_report_rows_are_refused(tmp_path: Path, old: str, new: str, key: str) -> None:
    # `name: ..` put results/<name> outside the results folder; `worst-case` is a row the report makes.
    from benchmark.report.tidy import WORST_CASE
    from benchmark.suite.schema import RESERVED_LABELS

    assert WORST_CASE in RESERVED_LABELS
    assert old in GOOD
    msg = problems(tmp_path, GOOD.replace(old, new, 1))
    assert key in msg
