"""Tests of benchmark.models: architectures, safe checkpoint loading, RobustBench offline loading."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from torch import nn

from benchmark.errors import CheckpointError, LookupNameError
from benchmark.models import ARCHITECTURES
from benchmark.models.architectures import (
    NORMALIZED_MODEL_PREFIX,
    Normalize,
    build_architecture,
    wide_resnet,
    with_normalization,
)
from benchmark.models.checkpoint import (
    apply_key_map,
    load_into,
    load_state_dict,
    read_safetensors_metadata,
    save_safetensors,
    weights_hash,
)
from benchmark.provenance import sha256_file

# Builders for 8x8 single-channel digits; everything else is a CIFAR-sized network.
_SMALL_INPUT = {"small_cnn", "mlp", "linear"}


def _tiny() -> nn.Module:
    torch.manual_seed(0)
    return build_architecture("small_cnn", 10, 1, 8)


# ----------------------------------------------------------------------------------- architectures


@pytest.mark.parametrize("name", ARCHITECTURES.names())
def test_every_architecture_gives_logits(name: str) -> None:
    c, s = (1, 8) if name in _SMALL_INPUT else (3, 32)
    model = build_architecture(name, 7, c, s).eval()
    with torch.no_grad():
        out = model(torch.rand(2, c, s, s))
    assert out.shape == (2, 7) and torch.isfinite(out).all()


def test_wide_resnet_is_configurable() -> None:
    model = wide_resnet(depth=10, widen=1)(10, 3, 32)
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    with pytest.raises(ValueError, match="6n\\+4"):
        wide_resnet(depth=27, widen=1)(10, 3, 32)


def test_unknown_architecture_suggests() -> None:
    with pytest.raises(LookupNameError, match="Did you mean 'resnet18'"):
        build_architecture("resnet81", 10, 3, 32)


def test_normalization_inside_model_and_prefix() -> None:
    base = build_architecture("linear", 3, 2, 4)
    wrapped = with_normalization(base, (0.5, 0.25), (0.5, 2.0))
    x = torch.rand(2, 2, 4, 4)
    norm = Normalize((0.5, 0.25), (0.5, 2.0))
    assert torch.allclose(wrapped(x), base(norm(x)))
    keys = set(wrapped.state_dict())
    assert {"normalize.mean", "normalize.std"} <= keys
    assert {NORMALIZED_MODEL_PREFIX + k for k in base.state_dict()} <= keys
    # A checkpoint saved from the wrapped model round-trips into a freshly built one.
    fresh = build_architecture("linear", 3, 2, 4, mean=(0.5, 0.25), std=(0.5, 2.0))
    load_into(fresh, wrapped.state_dict(), source="memory")
    assert weights_hash(fresh) == weights_hash(wrapped)
    with pytest.raises(ValueError, match="both mean and std"):
        build_architecture("linear", 3, 2, 4, mean=(0.5, 0.5))
    with pytest.raises(ValueError, match="channels"):
        build_architecture("linear", 3, 2, 4, mean=(0.5,), std=(0.5,))


# -------------------------------------------------------------------------------------- checkpoints


class _RunsCode:
    """A pickle payload whose unpickling would create a marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def test_pickle_that_runs_code_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": _tiny().state_dict(), "hook": _RunsCode(marker)}, path)
    with pytest.raises(CheckpointError, match="not a plain weights file.*safetensors") as err:
        load_state_dict(path)
    assert str(path) in str(err.value)
    assert not marker.exists()


def test_sha256_pin_checked_before_loading(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save(_RunsCode(marker), path)
    wrong = "0" * 64
    with pytest.raises(CheckpointError, match="sha256 mismatch") as err:
        load_state_dict(path, sha256=wrong)
    assert wrong in str(err.value) and sha256_file(path) in str(err.value)
    assert not marker.exists()


def test_sha256_pin_accepts_the_right_hash(tmp_path: Path) -> None:
    path = tmp_path / "ok.pt"
    torch.save(_tiny().state_dict(), path)
    assert load_state_dict(path, sha256=sha256_file(path).upper()).keys() == _tiny().state_dict().keys()


@pytest.mark.parametrize("container", ["state_dict", "model_state_dict", "model", "net", None])
def test_containers_unwrapped(tmp_path: Path, container: str | None) -> None:
    sd = _tiny().state_dict()
    path = tmp_path / "ckpt.pth"
    torch.save({container: sd, "epoch": 3} if container else sd, path)
    loaded = load_state_dict(path)
    assert loaded.keys() == sd.keys()
    assert all(torch.equal(loaded[k], sd[k]) for k in sd)


def test_non_tensor_values_refused(tmp_path: Path) -> None:
    path = tmp_path / "odd.pt"
    torch.save({"w": torch.zeros(2), "epoch": 3}, path)
    with pytest.raises(CheckpointError, match="non-tensor values under epoch"):
        load_state_dict(path)


def test_missing_file_and_bad_suffix(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found: .*nope.pt"):
        load_state_dict(tmp_path / "nope.pt")
    (tmp_path / "weights.npz").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="unsupported checkpoint suffix"):
        load_state_dict(tmp_path / "weights.npz")


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
@pytest.mark.parametrize("damage", ["random", "truncated", "empty"])
def test_corrupt_files_refused(tmp_path: Path, suffix: str, damage: str) -> None:
    good = tmp_path / f"good{suffix}"
    if suffix == ".pt":
        torch.save(_tiny().state_dict(), good)
    else:
        save_safetensors(_tiny().state_dict(), good, {})
    data = good.read_bytes()
    bad = tmp_path / f"bad{suffix}"
    # Fixed garbage whose first byte is no pickle opcode that names a global ('c', 0x93).
    garbage = bytes((i * 37 + 11) % 256 for i in range(4096))
    bad.write_bytes({"random": garbage, "truncated": data[: len(data) // 2], "empty": b""}[damage])
    with pytest.raises(CheckpointError, match="corrupt") as err:
        load_state_dict(bad)
    assert str(bad) in str(err.value)


def test_strict_loading_missing_unexpected_and_shapes() -> None:
    model = _tiny()
    sd = dict(model.state_dict())
    missing = {k: v for k, v in sd.items() if k != "fc2.bias"}
    with pytest.raises(CheckpointError, match="src.pt.*1 missing key\\(s\\): fc2.bias"):
        load_into(_tiny(), missing, source="src.pt")
    extra = {**sd, "fc3.weight": torch.zeros(1)}
    with pytest.raises(CheckpointError, match="1 unexpected key\\(s\\): fc3.weight"):
        load_into(_tiny(), extra, source="src.pt")
    shaped = {**sd, "fc2.bias": torch.zeros(11)}
    with pytest.raises(CheckpointError, match="shape mismatch.*fc2.bias: checkpoint \\(11,\\) vs model \\(10,\\)"):
        load_into(_tiny(), shaped, source="src.pt")
    many = {f"junk{i}": torch.zeros(1) for i in range(25)}
    with pytest.raises(CheckpointError, match="25 unexpected key\\(s\\).*and 15 more"):
        load_into(_tiny(), {**sd, **many}, source="src.pt")


def test_prefixed_keys_need_mapping_then_load() -> None:
    model = _tiny()
    prefixed = {f"module.{k}": v for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError, match="strip_prefixes"):
        load_into(_tiny(), prefixed, source="dp.pt")
    fresh = build_architecture("small_cnn", 10, 1, 8)
    load_into(fresh, apply_key_map(prefixed, strip_prefixes=["module."]), source="dp.pt")
    assert weights_hash(fresh) == weights_hash(model)


def test_apply_key_map() -> None:
    t = torch.zeros(1)
    sd = {"module.model.fc.weight": t, "module.fc2.bias": t, "conv.weight": t}
    out = apply_key_map(sd, strip_prefixes=["module.", "model."], rename={"fc": "linear"})
    assert set(out) == {"linear.weight", "fc2.bias", "conv.weight"}
    assert set(apply_key_map(sd, rename={"conv.weight": "c.w"})) == {"module.model.fc.weight", "module.fc2.bias", "c.w"}
    with pytest.raises(CheckpointError, match="both"):
        apply_key_map({"a.w": t, "b.w": t}, rename={"a": "b"})


def test_safetensors_round_trip_with_metadata(tmp_path: Path) -> None:
    model = _tiny()
    path = tmp_path / "sub" / "model.safetensors"
    save_safetensors(model.state_dict(), path, {"arch": "small_cnn", "epochs": "3"})
    assert read_safetensors_metadata(path) == {"arch": "small_cnn", "epochs": "3"}
    fresh = build_architecture("small_cnn", 10, 1, 8)
    load_into(fresh, load_state_dict(path), source=str(path))
    assert weights_hash(fresh) == weights_hash(model)
    assert [p.name for p in path.parent.iterdir()] == ["model.safetensors"]  # no temp file left
    with pytest.raises(CheckpointError, match="str to str"):
        save_safetensors(model.state_dict(), path, {"epochs": 3})  # type: ignore[dict-item]


def test_safetensors_tied_weights(tmp_path: Path) -> None:
    w = torch.rand(3, 3)
    save_safetensors({"a": w, "b": w}, tmp_path / "tied.safetensors", {})
    loaded = load_state_dict(tmp_path / "tied.safetensors")
    assert torch.equal(loaded["a"], loaded["b"])


def test_weights_hash_stable_and_sensitive() -> None:
    a, b = _tiny(), _tiny()
    h = weights_hash(a)
    assert h == weights_hash(b) == weights_hash(a.state_dict()) and len(h) == 64
    with torch.no_grad():
        b.fc2.weight[0, 0] += 1e-6
    assert weights_hash(b) != h
    bn = nn.BatchNorm2d(3)
    h_bn = weights_hash(bn)
    bn.running_mean += 1  # buffers count, not only parameters
    assert weights_hash(bn) != h_bn


# ------------------------------------------------------------------------------------------ RobustBench


@pytest.fixture(scope="module")
def robustbench_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model dir holding a random-weight checkpoint for RobustBench's cifar10/Linf 'Standard'."""
    from benchmark._compat import ensure_autoattack_module

    ensure_autoattack_module()
    from robustbench.model_zoo import model_dicts
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel

    root = tmp_path_factory.mktemp("rb_models")
    torch.manual_seed(0)
    model = model_dicts[BenchmarkDataset.cifar_10][ThreatModel.Linf]["Standard"]["model"]()
    path = root / "cifar10" / "Linf" / "Standard.pt"
    path.parent.mkdir(parents=True)
    # The published checkpoints nest the weights under 'state_dict' with a DataParallel prefix.
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, path)
    return root


def test_robustbench_loads_existing_file(robustbench_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import robustbench.utils as rb_utils

    from benchmark.models.zoo import load_robustbench

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("robustbench tried to download")

    monkeypatch.setattr(rb_utils, "download_gdrive_new", no_network)
    monkeypatch.delenv("TORCH_FORCE_WEIGHTS_ONLY_LOAD", raising=False)
    model = load_robustbench("Standard", model_dir=robustbench_dir)
    assert not model.training
    assert "TORCH_FORCE_WEIGHTS_ONLY_LOAD" not in os.environ  # restored after loading
    with torch.no_grad():
        out = model(torch.rand(2, 3, 32, 32))
    assert out.shape == (2, 10)
    saved = torch.load(robustbench_dir / "cifar10" / "Linf" / "Standard.pt", weights_only=True)["state_dict"]
    assert weights_hash(model) == weights_hash(apply_key_map(saved, strip_prefixes=["module."]))


def test_robustbench_missing_file_names_path(tmp_path: Path) -> None:
    from benchmark.models.zoo import load_robustbench

    with pytest.raises(CheckpointError) as err:
        load_robustbench("Standard", model_dir=tmp_path)
    msg = str(err.value)
    assert str(tmp_path / "cifar10" / "Linf" / "Standard.pt") in msg
    assert "robustbench.utils.load_model" in msg and "1t98aEuzeTL8P7Kpd5DIrCoCL21BNZUhC" in msg
    assert not (tmp_path / "cifar10").exists()  # nothing was created or downloaded


def test_robustbench_unknown_name_suggests(tmp_path: Path) -> None:
    from benchmark.models.zoo import load_robustbench, robustbench_names

    with pytest.raises(LookupNameError, match="Did you mean 'Standard'"):
        load_robustbench("Standrd", model_dir=tmp_path)
    with pytest.raises(LookupNameError, match="Did you mean 'Linf'"):
        robustbench_names("cifar10", "linf")
    names = robustbench_names("cifar10", "Linf")
    assert "Standard" in names and names == sorted(names)


def test_robustbench_file_that_runs_code_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from benchmark.models.zoo import load_robustbench

    marker = tmp_path / "pwned"
    path = tmp_path / "cifar10" / "Linf" / "Standard.pt"
    path.parent.mkdir(parents=True)
    torch.save({"state_dict": {"conv1.weight": torch.zeros(1)}, "x": _RunsCode(marker)}, path)
    # Even a user who opted out of weights-only loading globally gets the safe load here.
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    with pytest.raises(CheckpointError, match="not a plain weights file") as err:
        load_robustbench("Standard", model_dir=tmp_path)
    assert str(path) in str(err.value)
    assert not marker.exists()
    assert os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] == "1"
