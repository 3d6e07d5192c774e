"""The command line: exit codes, typed options, devices, ``python -m benchmark``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from benchmark.cli import _typed_updates, build_parser, main
from benchmark.errors import SuiteError
from benchmark.suite.loading import load_suite
from helpers import GOOD, write

ROOT = Path(__file__).resolve().parents[1]

def test_cli_validate_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = write(tmp_path, GOOD, "good.yaml")
    bad = write(tmp_path, GOOD.replace("steps: 3", "stpes: 3"), "bad.yaml")
    assert main(["validate", str(good)]) == 0
    assert main(["validate", str(good), str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad.yaml" in err and "Traceback" not in err and "Did you mean 'steps'" in err


def test_python_dash_m_and_console_script() -> None:
    out = subprocess.run([sys.executable, "-m", "benchmark", "ls"], capture_output=True, text=True, check=True).stdout
    for word in ("digits", "cifar10", "small_cnn", "wrn_28_10", "pgd", "autoattack", "ece", "standard", "at"):
        assert word in out
    bad = subprocess.run([sys.executable, "-m", "benchmark", "validate", str(ROOT / "nope.yaml")],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "nope.yaml: file not found" in bad.stderr


def _suite_from_cli(path: Path, *options: str):  # noqa: ANN202 - Suite
    args = build_parser().parse_args(["run", str(path), *options])
    return load_suite(path, args.set, _typed_updates(args))


@pytest.mark.parametrize("device", ["cpu", "cuda", "cuda:1", "cuda:12", "mps", "auto"])
def test_every_documented_device_is_accepted(tmp_path: Path, device: str) -> None:
    assert _suite_from_cli(write(tmp_path, GOOD), "--device", device).device == device


@pytest.mark.parametrize("device", ["gpu", "cuda:", "cuda:x", "cuda1", ""])
def test_other_devices_are_rejected_by_the_schema(tmp_path: Path, device: str) -> None:
    with pytest.raises(SuiteError, match="device"):
        _suite_from_cli(write(tmp_path, GOOD), "--device", device)


def test_an_absent_cuda_device_is_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    if torch.cuda.device_count() > 1:
        pytest.skip("this machine has a cuda:1")
    assert main(["run", str(write(tmp_path, GOOD)), "--device", "cuda:1", "--results-dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "device 'cuda:1' was asked for" in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("data_dir", ["data/my set #1", "on", "yes", "null", "8/255", "[a, b]", "x: y"])
def test_cli_values_are_not_parsed_as_yaml(tmp_path: Path, data_dir: str) -> None:
    # --data-dir, --device, --n-examples, --executor, --address are set as typed values; only --set is YAML.
    suite = _suite_from_cli(write(tmp_path, GOOD), "--data-dir", data_dir, "--n-examples", "7",
                            "--address", "ray://head:10001")
    assert suite.data.data_dir == Path(data_dir) and suite.data.n_examples == 7
    assert suite.runtime.executor == "ray" and suite.runtime.address == "ray://head:10001"
    # --set is YAML on purpose (numbers, lists, 8/255); a YAML boolean is no path, and that is said.
    with pytest.raises(SuiteError, match="data.data_dir"):
        _suite_from_cli(write(tmp_path, GOOD), "--set", "data.data_dir=on")
    assert _suite_from_cli(write(tmp_path, GOOD), "--set", 'data.data_dir="on"').data.data_dir == Path("on")


def test_a_data_dir_with_spaces_and_hash_reaches_the_loader(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    suite = write(tmp_path, GOOD.replace("dataset: digits", "dataset: cifar10"))
    data_dir = tmp_path / "my set #1"
    assert main(["run", str(suite), "--data-dir", str(data_dir), "--results-dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert f"{data_dir}/cifar-10-batches-py/" in err  # the whole name, not cut at '#'


def test_download_flag_is_typed(tmp_path: Path) -> None:
    assert _suite_from_cli(write(tmp_path, GOOD), "--download").data.download is True
    assert _suite_from_cli(write(tmp_path, GOOD)).data.download is False
