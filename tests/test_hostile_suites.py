"""Hostile suites (issue 8): every bad input is a short ``file: key: problem`` (exit 2), never a traceback,
a huge message or a huge allocation."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmark.cli import main
from benchmark.errors import SuiteError, clip
from benchmark.suite.loading import MAX_SUITE_BYTES, MAX_YAML_DEPTH, load_suite
from helpers import GOOD, write

BIG = "a" * 1_000_000
"""A 1 MB user value."""

#: ``x-`` anchors shared by entries, a merge whose key is overridden, an alias used twice.
ANCHORS = """
name: t
x-train: &train {kind: standard, arch: small_cnn, epochs: 1, seed: 0}
x-eps: &eps [8/255, 0.1]
data: {dataset: digits, n_examples: 20}
models:
  m: {recipe: *train}
  m2: {recipe: {<<: *train, seed: 1}}
evaluations:
  - attack: clean
  - {attack: pgd, eps: *eps, steps: 3}
  - {attack: fgsm, eps: *eps}
"""


def validate(capsys: pytest.CaptureFixture[str], path: Path, *args: str) -> str:
    """Run ``bench validate``; assert exit 2 without a traceback and return stderr."""
    assert main(["validate", str(path), *args]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert str(path) in err
    return err


def problems(tmp_path: Path, text: str, overrides: list[str] | None = None) -> str:
    """Load a suite written from ``text``; assert it fails and return the message."""
    p = write(tmp_path, text)
    with pytest.raises(SuiteError) as info:
        load_suite(p, overrides)
    return str(info.value)


def billion_laughs(levels: int = 9) -> str:
    """The classic alias bomb: each level is nine aliases of the one before (9**levels strings)."""
    lines = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    for prev, cur in zip("abcdefghijklmnop", "bcdefghijklmnop"[:levels - 1]):
        lines.append(f"{cur}: &{cur} [" + ", ".join([f"*{prev}"] * 9) + "]")
    return "\n".join(lines) + "\n"


# 1. Alias bombs, recursive aliases, deep nesting.

def test_alias_bomb_is_refused_with_a_short_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bomb = billion_laughs()
    assert len(bomb) < 500
    err = validate(capsys, write(tmp_path, bomb))
    assert len(err) < 2000
    assert "alias *" in err and "line " in err and "100,000" in err


def test_alias_bomb_in_a_set_value_is_refused(tmp_path: Path) -> None:
    flow = "{" + billion_laughs().strip().replace("\n", ", ") + "}"
    msg = problems(tmp_path, GOOD, [f"description={flow}"])
    assert "--set description=" in msg and "100,000" in msg and len(msg) < 2000


def test_legitimate_anchors_and_merges_still_load(tmp_path: Path) -> None:
    suite = load_suite(write(tmp_path, ANCHORS))
    assert suite.models["m"].recipe.seed == 0 and suite.models["m2"].recipe.seed == 1
    assert suite.evaluation_map["pgd"].eps == suite.evaluation_map["fgsm"].eps == pytest.approx((8 / 255, 0.1))


def test_recursive_alias_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = validate(capsys, write(tmp_path, GOOD + "description: &d [1, *d]\n"))
    assert "alias *d is inside its own anchor" in err and "line 11" in err


def test_deep_nesting_is_refused_not_a_recursion_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = validate(capsys, write(tmp_path, "description: " + "[" * 20_000 + "]" * 20_000 + "\n"))
    assert f"nested deeper than {MAX_YAML_DEPTH} levels" in err and "line 1" in err


# 2. Messages never carry an unbounded user value, nor an unbounded list of problems.

def test_clip_keeps_the_start_and_says_the_length() -> None:
    assert clip("short") == "short"
    assert clip(BIG) == "a" * 80 + "... (1000000 chars)"
    assert len(clip(list(range(10**5)))) < 200


@pytest.mark.parametrize("old,new,key", [
    ("dataset: digits", f"dataset: {BIG}", "data.dataset: unknown dataset"),
    ("  - attack: clean\n", f"  - attack: clean\n  - attack: {BIG}\n", "evaluations[1].attack: unknown attack"),
    ("    steps: 3\n", f"    steps: 3\n    norm: {BIG}\n", "evaluations[1].norm: invalid value"),
    ("    steps: 3\n", f"    steps: 3\n    ? {BIG}\n    : 1\n", "evaluations[1].aaaa"),
    ("    eps: [8/255, 0.1, 2/255]\n", f"    eps: {BIG}\n", "evaluations[1].eps: eps must be"),
    ("name: t\n", f"name: t\n? {BIG}\n: 1\n", "aaaa"),
    ("  m: {recipe", f"  ? {'.' * 10**6}\n  : {{recipe", "models"),
    ("name: t", f"name: {'.' * 10**6}", "name"),
], ids=["dataset", "attack", "literal", "eval-key", "eps", "top-key", "model-name", "suite-name"])
def test_a_1mb_value_gives_a_short_message(tmp_path: Path, old: str, new: str, key: str) -> None:
    assert old in GOOD
    msg = problems(tmp_path, GOOD.replace(old, new, 1))
    assert key in msg
    assert len(msg) < 3000


def test_the_list_of_problems_is_capped(tmp_path: Path) -> None:
    text = GOOD + "".join(f"  - {{attack: fgsm, name: f{i}, eps: -1}}\n" for i in range(50))
    msg = problems(tmp_path, text)
    assert "51 problem(s)" not in msg and "50 problem(s)" in msg
    assert msg.rstrip().endswith("... and 30 more")
    assert len(msg.splitlines()) == 22


# 3. Duplicate keys, at any depth.

def test_duplicate_top_level_key_names_both_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = validate(capsys, write(tmp_path, GOOD + "models:\n  n: {recipe: {kind: standard, arch: mlp, epochs: 1}}\n"))
    assert "line 4 and line 11: duplicate key 'models'" in err


@pytest.mark.parametrize("old,new,lines", [
    ("    steps: 3\n", "    steps: 3\n    steps: 5\n", "line 10 and line 11: duplicate key 'steps'"),
    ("epochs: 1}", "epochs: 1, epochs: 2}", "line 5: duplicate key 'epochs'"),
    ("data: {dataset: digits", "data: {dataset: digits, dataset: cifar10", "line 3: duplicate key 'dataset'"),
])
def test_nested_duplicate_keys(tmp_path: Path, old: str, new: str, lines: str) -> None:
    assert old in GOOD
    assert lines in problems(tmp_path, GOOD.replace(old, new, 1))


# 4. Caps: file size, bins, eps lists.

def test_a_file_over_1_mib_is_refused_before_parsing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = write(tmp_path, GOOD + "# " + "x" * MAX_SUITE_BYTES + "\n")
    err = validate(capsys, p)
    assert f"file is {p.stat().st_size:,} bytes" in err and "1 MiB" in err


@pytest.mark.parametrize("extra,key", [
    ("n_bins: 100000\n", "n_bins: Input should be less than or equal to 1000"),
    ("  - {attack: robustness, max_eps: 0.2, bins: 5000}\n", "evaluations[2].bins: 5000 bins; at most 1000"),
    ("  - {attack: fgsm, eps: [" + ", ".join(f"{k}/1000" for k in range(100)) + "]}\n",
     "evaluations[2].eps: 100 distinct eps; at most 64"),
], ids=["n_bins", "robustness-bins", "eps-list"])
def test_caps_on_bins_and_eps_lists(tmp_path: Path, extra: str, key: str) -> None:
    assert key in problems(tmp_path, GOOD + extra)


def test_cap_on_adals_eps_grid(tmp_path: Path) -> None:
    grid = ", ".join(f"{k}/1000" for k in range(1, 101))
    text = GOOD.replace("kind: standard, arch: small_cnn, epochs: 1",
                        f"kind: ar-adals, arch: small_cnn, epochs: 1, adals: {{eps_grid: [{grid}]}}")
    assert "models.m.recipe.adals.eps_grid: 100 distinct eps; at most 64" in problems(tmp_path, text)


# 5. `--set` values and tags.

@pytest.mark.parametrize("item,problem", [
    ("seed=!!python/object:os.system x", "tag '!!python/object:os.system' is not allowed"),
    ("seed=!foo 1", "tag '!foo' is not allowed"),
    ("evaluations[1].eps=[0.1, 0.2", "invalid YAML"),
    ("description={a: 1, a: 2}", "duplicate key 'a'"),
])
def test_bad_set_values_name_the_override(tmp_path: Path, capsys: pytest.CaptureFixture[str], item: str,
                                          problem: str) -> None:
    err = validate(capsys, write(tmp_path, GOOD), "--set", item)
    assert f": --set {item}: line 1" in err and problem in err


@pytest.mark.parametrize("tag", ["!!python/object/apply:os.system ['echo hi']", "!foo 1", "!!binary aGk="])
def test_tags_in_the_file_are_refused_with_the_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                    tag: str) -> None:
    err = validate(capsys, write(tmp_path, GOOD + f"description: {tag}\n"))
    assert "line 11, column 14: tag '" in err and "is not allowed" in err


def test_core_tags_are_plain_data(tmp_path: Path) -> None:
    assert load_suite(write(tmp_path, GOOD + "description: !!str 5\n")).description == "5"


@pytest.mark.parametrize("value,problem", [("2001-02-30", "day is out of range"), ("9" * 5000, "4300 digits")])
def test_values_yaml_cannot_construct_are_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str,
                                                 problem: str) -> None:
    err = validate(capsys, write(tmp_path, GOOD + f"seed: {value}\n"))
    assert "invalid YAML value" in err and problem in err


# 6. Negative seeds.

@pytest.mark.parametrize("old,new,key", [
    ("name: t\n", "name: t\nseed: -1\n", "seed: Input should be greater than or equal to 0"),
    ("epochs: 1}", "epochs: 1, seed: -1}", "models.m.recipe.seed: a seed must be from 0 to 2**63 - 1, got -1"),
    ("    steps: 3\n", "    steps: 3\n    seed: -3\n", "evaluations[1].seed: a seed must be from 0 to 2**63 - 1, "
                                                    "got -3"),
    ("epochs: 1}}", "epochs: 1}, seeds: [-1, 2]}", "models.m.seeds[0]: Input should be greater than or equal to 0"),
    ("name: t\n", f"name: t\nseed: {2**64}\n", "seed: Input should be less than or equal to"),
], ids=["suite", "recipe", "evaluation", "seeds", "too-large"])
def test_seeds_must_be_non_negative(tmp_path: Path, old: str, new: str, key: str) -> None:
    assert old in GOOD
    assert key in problems(tmp_path, GOOD.replace(old, new, 1))


# 7. Names that are paths, and names the report uses for its own rows.

@pytest.mark.parametrize("old,new,key", [
    ("name: t", "name: '..'", "name"),
    ("name: t", "name: a/b", "name"),
    ("  m: {recipe", "  '.': {recipe", "models"),
    ("  m: {recipe", "  a/b: {recipe", "models"),
    ("  m: {recipe", f"  {'m' * 101}: {{recipe", "models"),
    ("    steps: 3\n", "    steps: 3\n    name: worst-case\n", "evaluations[1].name: 'worst-case' names"),
    ("    steps: 3\n", "    steps: 3\n    name: audit\n", "evaluations[1].name: 'audit' names the gradient-masking"),
    ("    steps: 3\n", "    steps: 3\n    name: clean\n", "evaluations[1].name: 'clean' names"),
    ("    steps: 3\n", f"    steps: 3\n    name: {'p' * 101}\n", "evaluations[1].name: name has 101 characters"),
])
def test_reserved_and_path_names(tmp_path: Path, old: str, new: str, key: str) -> None:
    assert old in GOOD
    msg = problems(tmp_path, GOOD.replace(old, new, 1))
    assert key in msg
    assert "used twice" not in msg  # the appended audit entry is not reported a second time


def test_the_audit_and_clean_kinds_keep_their_own_names(tmp_path: Path) -> None:
    suite = load_suite(write(tmp_path, GOOD.replace("  - attack: clean\n", "  - {attack: clean, name: clean}\n")))
    assert [e.label for e in suite.evaluations] == ["clean", "pgd", "audit"]
