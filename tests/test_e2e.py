"""The shipped suites end to end: digits at a reduced n, CIFAR-10 on a generated miniature."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch

from cifar_fixture import make_cifar10c, read_test_batch

from benchmark.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_digits_suite_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The shipped suite as written, with fewer examples and shorter training so the test stays quick.
    args = ["run", str(ROOT / "suites" / "digits.yaml"), "--n-examples", "60", "--results-dir", str(tmp_path / "res"),
            "--no-progress", "--set", f"cache_dir={tmp_path / 'cache'}",
            "--set", "models.standard.recipe.epochs=10", "--set", "models.at.recipe.epochs=10"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "Robust accuracy (%) - digits" in out and "worst-case@0.1" in out
    results = tmp_path / "res" / "digits"
    tidy = pd.read_csv(results / "tidy.csv")
    assert set(tidy.model) == {"standard", "at"}
    assert set(tidy.evaluation) == {"clean", "fgsm", "pgd", "pgd-l2", "autoattack-fast", "autoattack",
                                    "transfer-from-standard", "worst-case", "audit"}
    assert (tidy.n[tidy.metric == "robust_accuracy"] == 60).all()
    ra = tidy[tidy.metric == "robust_accuracy"].set_index(["model", "evaluation", "eps"]).value
    for model in ("standard", "at"):
        # Worst case is never above any single attack at the same eps.
        for ev in ("pgd", "autoattack-fast", "autoattack", "fgsm"):
            for eps in ra.loc[model, ev].index:
                assert ra.loc[model, "worst-case", eps] <= ra.loc[model, ev, eps] + 1e-12
    # The AT model is more robust than the standard one under PGD at its training eps.
    assert ra.loc["at", "pgd", 0.1] > ra.loc["standard", "pgd", 0.1]
    # Trained models are cached: `bench train` afterwards trains nothing.
    cached = sorted((tmp_path / "cache").glob("*.safetensors"))
    assert len(cached) == 2
    mtimes = [p.stat().st_mtime_ns for p in cached]
    assert main(["train", str(ROOT / "suites" / "digits.yaml"), "--no-progress", "--set",
                 f"cache_dir={tmp_path / 'cache'}", "--set", "models.standard.recipe.epochs=10",
                 "--set", "models.at.recipe.epochs=10"]) == 0
    assert [p.stat().st_mtime_ns for p in cached] == mtimes


def _robustbench_checkpoint(model_dir: Path) -> None:
    """A RobustBench `Standard` checkpoint in RobustBench's own layout, with random weights."""
    from benchmark._compat import ensure_autoattack_module

    ensure_autoattack_module()
    from robustbench.model_zoo import model_dicts
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel

    torch.manual_seed(0)
    net = model_dicts[BenchmarkDataset.cifar_10][ThreatModel.Linf]["Standard"]["model"]()
    path = model_dir / "cifar10" / "Linf" / "Standard.pt"
    path.parent.mkdir(parents=True)
    torch.save({"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}}, path)


@pytest.mark.slow
def test_cifar10_suite_on_miniature_cifar(tmp_path: Path, cifar10_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The real suite file through torchvision's real CIFAR-10 loader and RobustBench's real loader, on
    # generated stand-ins (20 test images, random-weight Standard checkpoint). Budgets are cut so the
    # test runs on a CPU: 1 epoch, 2 PGD steps, AutoAttack's APGD-CE only. Rice2020Overfitting
    # (WRN-34-20) and Engstrom2019Robustness are left out here; their loading path is the same.
    model_dir = tmp_path / "rb"
    _robustbench_checkpoint(model_dir)
    data_dir = tmp_path / "data"  # the shared miniature plus a miniature CIFAR-10-C (fog only)
    shutil.copytree(cifar10_dir, data_dir)
    make_cifar10c(data_dir, *read_test_batch(data_dir), ["fog"])
    sets = [f"data.data_dir={data_dir}", f"cache_dir={tmp_path / 'cache'}",
            f"models.Standard.model_dir={model_dir}",
            "models.resnet18-standard.recipe.epochs=1", "models.resnet18-at.recipe.epochs=1",
            "models.resnet18-at.recipe.adversarial.steps=2",
            "evaluations[1].steps=2", "evaluations[2].version=custom", "evaluations[2].attacks=[apgd-ce]",
            "evaluations[3].steps=2", "audit.large_eps_steps=5",
            # certify with 30 draws, not Cohen's 100000 (every image abstains: the path, not the radii);
            # OOD against impulse noise only (the CIFAR-100 loader has its own test in test_data)
            "evaluations[4].n0=5", "evaluations[4].n=30", "evaluations[4].sigma=[0.25]",
            "evaluations[5].shift=[impulse_noise@5]", "evaluations[5].n=4", "evaluations[5].sigma=[0.25]",
            "evaluations[6].steps=2", "evaluations[7].n_queries=5",
            "evaluations[8].corruptions=[fog]", "evaluations[8].severities=[1, 5]"]
    args = ["run", str(ROOT / "suites" / "cifar10.yaml"), "--n-examples", "6", "--results-dir", str(tmp_path / "res"),
            "--no-progress", "--models", "Standard", "resnet18-standard", "resnet18-at"]
    for s in sets:
        args += ["--set", s]
    assert main(args) == 0
    tidy = pd.read_csv(tmp_path / "res" / "cifar10" / "tidy.csv")
    assert set(tidy.model) == {"Standard", "resnet18-standard", "resnet18-at"}
    pgd = tidy[(tidy.evaluation == "pgd") & (tidy.metric == "robust_accuracy")]
    assert sorted(pgd.eps.unique()) == pytest.approx([2 / 255, 4 / 255, 8 / 255, 12 / 255, 16 / 255])
    assert sorted(tidy[tidy.evaluation == "autoattack"].eps.unique()) == pytest.approx([8 / 255, 16 / 255])
    assert (tidy.n[tidy.metric == "accuracy"] == 6).all()
    assert {"certified_accuracy@0", "ood_auroc:entropy@sigma=0.25", "attack_success_rate", "robust_accuracy@q=6"} \
        <= set(tidy.metric)
    assert set(tidy[tidy.evaluation == "cifar10-c"].variant) == {"fog@1", "fog@5"}
    assert (tmp_path / "res" / "cifar10" / "corruption_mce.csv").is_file()
    assert "8/255" in capsys.readouterr().out


def test_cifar10_missing_files_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["run", str(ROOT / "suites" / "cifar10.yaml"), "--results-dir", str(tmp_path / "res"), "--no-progress",
            "--set", f"data.data_dir={tmp_path / 'nodata'}"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "cifar-10-batches-py" in err and "download" in err and "Traceback" not in err


def test_robustbench_weights_missing_names_the_file(tmp_path: Path, cifar10_dir: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    args = ["run", str(ROOT / "suites" / "cifar10.yaml"), "--results-dir", str(tmp_path / "res"), "--no-progress",
            "--models", "Rice2020Overfitting", "--set", f"data.data_dir={cifar10_dir}",
            "--set", f"models.Rice2020Overfitting.model_dir={tmp_path / 'rb'}",
            # the transfer matrix's sources (RobustBench's Standard among them) would be needed too
            "--set", "evaluations[6].sources=[Rice2020Overfitting]", "--set", "evaluations[6].ensembles=[]"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "models.Rice2020Overfitting.robustbench" in err
    assert str(tmp_path / "rb" / "cifar10" / "Linf" / "Rice2020Overfitting.pt") in err



def test_clobbered_robustbench_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    # torchattacks' wheel overwrites RobustBench 1.1.1 with an old copy; that must not go unnoticed.
    from benchmark._compat import check_robustbench_intact, ensure_autoattack_module

    ensure_autoattack_module()
    import robustbench.utils

    check_robustbench_intact()
    monkeypatch.delattr(robustbench.utils, "download_gdrive_new")
    with pytest.raises(ImportError, match="force-reinstall --no-deps robustbench==1.1.1"):
        check_robustbench_intact()
