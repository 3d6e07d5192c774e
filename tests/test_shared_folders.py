"""Shared results folders and a hostile file system (issue 8, points 4 and 6).

One writer per results folder (a second run waits, or fails with ``--no-wait``), stale temporary files
swept, SIGTERM handled like Ctrl-C (exit 143), and every file-system refusal (a full disk, a read-only
folder, a file where the folder should be, a damaged manifest, a model that cannot be loaded) reported
once as ``file: problem`` with exit 2, keeping what was written valid.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from benchmark.cli import main
from benchmark.lock import HOLDER_NAME, folder_lock
from benchmark.models.architectures import build_architecture
from benchmark.models.checkpoint import save_safetensors
from benchmark.store import Store
from helpers import bench_run, make_suite, slow_suite

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
EVALS = """
  - attack: clean
  - attack: pgd
    eps: [0.05, 0.1]
    steps: 3
"""


def _bench(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "benchmark", *args], env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, cache: Path) -> tuple[Path, Path]:
    """A suite whose model is trained, and a finished results folder of it."""
    tmp = tmp_path_factory.mktemp("shared")
    suite = make_suite(tmp, cache, evals=EVALS, n=30)
    assert bench_run(suite, tmp / "ref") == 0
    return suite, tmp / "ref"


def test_a_second_run_waits_for_the_first_or_fails_with_no_wait(trained: tuple[Path, Path], tmp_path: Path) -> None:
    suite, _ = trained
    res = tmp_path / "res"
    with folder_lock(res / "t"):
        assert str(os.getpid()) in (res / "t" / HOLDER_NAME).read_text()
        fast = _bench("run", str(suite), "--results-dir", str(res), "--no-progress", "--no-wait")
        _, err = fast.communicate(timeout=300)
        assert fast.returncode == 2 and "Traceback" not in err
        assert f"{res / 't'}: another run is using this results folder (pid {os.getpid()}" in err
        assert not (res / "t" / "manifest.json").exists()  # it wrote nothing

        waiting = _bench("run", str(suite), "--results-dir", str(res), "--no-progress")
        deadline = time.time() + 300
        line = ""
        while time.time() < deadline and "waiting for it to finish" not in line:
            line = waiting.stderr.readline()  # type: ignore[union-attr]
        assert "waiting for it to finish" in line
        time.sleep(1.0)
        assert waiting.poll() is None and not (res / "t" / "manifest.json").exists()
    _, err = waiting.communicate(timeout=300)
    assert waiting.returncode == 0, err
    assert (res / "t" / "tidy.csv").is_file() and not (res / "t" / HOLDER_NAME).exists()


def test_stale_temporary_files_are_swept(trained: tuple[Path, Path], tmp_path: Path) -> None:
    suite, ref = trained
    shutil.copytree(ref, tmp_path / "res")
    folder = tmp_path / "res" / "t"
    stale = [folder / "cells" / ".abc.parquet.k2j3h4.tmp", folder / ".tidy.csv.x7y8.tmp"]
    for p in stale:
        p.write_bytes(b"half a file")
    assert bench_run(suite, tmp_path / "res") == 0
    assert not any(p.exists() for p in stale)


def test_sigterm_is_handled_like_ctrl_c(tmp_path: Path, cache: Path) -> None:
    suite = slow_suite(tmp_path, cache)
    res = tmp_path / "res"
    proc = _bench("run", str(suite), "--results-dir", str(res), "--no-progress")
    cells = res / "k" / "cells"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(cells.glob("*.parquet"))) < 3 and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    before = {p.name: p.stat().st_mtime_ns for p in cells.glob("*.parquet")}
    if len(before) == 12:
        pytest.fail("the run finished before SIGTERM; make it longer")
    assert proc.returncode == 143, err
    assert "terminated (SIGTERM); finished cells are stored" in err and "Traceback" not in err
    assert not list(cells.glob(".*.tmp")) and not (res / "k" / HOLDER_NAME).exists()
    assert bench_run(suite, res) == 0
    after = {p.name: p.stat().st_mtime_ns for p in cells.glob("*.parquet")}
    assert len(after) == 12 and {k: after[k] for k in before} == before


def test_a_full_disk_stops_the_run_with_exit_2_and_keeps_what_was_written(
        trained: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    # The third cell's write hits a full disk (the error the file system raises, from inside the write).
    suite, ref = trained
    import benchmark.store as store_module

    real = store_module.pq.write_table
    calls = {"n": 0}

    def full_after_two(table: object, where: object, **kwargs: object) -> None:
        calls["n"] += 1
        if calls["n"] > 2:
            where.write(b"PAR1")  # type: ignore[attr-defined]
            raise OSError(errno.ENOSPC, "No space left on device")
        real(table, where, **kwargs)

    monkeypatch.setattr(store_module.pq, "write_table", full_after_two)
    res = tmp_path / "res"
    assert bench_run(suite, res) == 2
    err = capsys.readouterr().err
    assert f"{res / 't' / 'cells'}: cannot write" in err and "No space left on device" in err
    assert "Traceback" not in err
    store = Store(res / "t")
    written = list(store.cells_dir.glob("*.parquet"))
    assert len(written) == 2 and not list(store.cells_dir.glob(".*.tmp"))
    for p in written:
        store.read(p.stem)  # complete and verified
    monkeypatch.setattr(store_module.pq, "write_table", real)
    assert bench_run(suite, res) == 0  # space freed: the rerun keeps the two cells and computes the rest
    pd.testing.assert_frame_equal(pd.read_csv(res / "t" / "tidy.csv").drop(columns="seconds"),
                                  pd.read_csv(ref / "t" / "tidy.csv").drop(columns="seconds"))


def _can_mount() -> bool:
    probe = Path("/tmp") / f"bench-mount-probe-{os.getpid()}"
    probe.mkdir(exist_ok=True)
    ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(probe)],
                        capture_output=True).returncode == 0
    if ok:
        subprocess.run(["umount", str(probe)], check=False)
    probe.rmdir()
    return ok


needs_mount = pytest.mark.skipif(sys.platform != "linux" or os.geteuid() != 0 or not _can_mount(),
                                 reason="needs root with mount rights (a real small or read-only file system)")


@needs_mount
def test_a_real_full_and_a_real_read_only_file_system(trained: tuple[Path, Path], tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    suite, ref = trained
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], check=True)
    try:
        res = mnt / "res"
        shutil.copytree(ref, res)
        for cell in list((res / "t" / "cells").glob("*.parquet"))[:2]:
            cell.unlink()
        free = shutil.disk_usage(mnt).free
        (mnt / "filler").write_bytes(b"\0" * max(0, free - 8192))
        assert bench_run(suite, res) == 2
        err = capsys.readouterr().err
        assert "No space left on device" in err and str(res / "t") in err and "Traceback" not in err
        store = Store(res / "t")
        for p in store.cells_dir.glob("*.parquet"):
            store.read(p.stem)
        assert not list(store.cells_dir.glob(".*.tmp"))
        (mnt / "filler").unlink()
        assert bench_run(suite, res) == 0
        capsys.readouterr()

        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        assert main(["report", str(res / "t")]) == 0  # read-only: the tables are printed, nothing written
        out = capsys.readouterr()
        assert "Robust accuracy (%)" in out.out and "Tables not written" in out.err and "Read-only" in out.err
        assert bench_run(suite, res) == 2
        err = capsys.readouterr().err
        assert str(res / "t") in err and "Read-only file system" in err and "Traceback" not in err
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_a_read_only_results_folder(trained: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    # Every file creation in the folder refused as on a read-only mount (portable: root ignores chmod).
    suite, ref = trained
    shutil.copytree(ref, tmp_path / "res")
    folder = tmp_path / "res" / "t"
    import tempfile

    import filelock

    real_mkstemp, real_open = tempfile.mkstemp, os.open

    def refuse(path: object) -> None:
        if str(folder) in str(path):
            raise OSError(errno.EROFS, "Read-only file system", str(path))

    def mkstemp(*args: object, dir: object = None, **kwargs: object) -> tuple[int, str]:  # noqa: A002
        refuse(dir)
        return real_mkstemp(*args, dir=dir, **kwargs)  # type: ignore[arg-type]

    def os_open(path: object, flags: int, *args: object, **kwargs: object) -> int:
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            refuse(path)
        return real_open(path, flags, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    monkeypatch.setattr(os, "open", os_open)
    assert filelock is not None
    capsys.readouterr()
    assert main(["report", str(folder)]) == 0
    out = capsys.readouterr()
    assert "Robust accuracy (%)" in out.out and "Tables not written" in out.err and "Traceback" not in out.err
    for cell in folder.glob("cells/*.parquet"):
        cell.unlink()
        break
    assert bench_run(suite, tmp_path / "res") == 2
    err = capsys.readouterr().err
    assert str(folder) in err and "Read-only file system" in err and "Traceback" not in err


def test_a_results_path_that_is_a_file(trained: tuple[Path, Path], tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    suite, _ = trained
    (tmp_path / "res").mkdir()
    (tmp_path / "res" / "t").write_text("not a folder")
    assert bench_run(suite, tmp_path / "res") == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'res' / 't'}: is a file, not a results folder" in err and "Traceback" not in err
    (tmp_path / "file").write_text("x")
    assert bench_run(suite, tmp_path / "file") == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'file' / 't'}: cannot create the results folder" in err and "Traceback" not in err
    assert (tmp_path / "res" / "t").read_text() == "not a folder"


@pytest.mark.parametrize("damage", [b"", b"\x00\xff garbage", b'{"suite": "t"}', b"[1, 2"])
def test_a_damaged_manifest_in_bench_report(trained: tuple[Path, Path], tmp_path: Path, damage: bytes,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    _, ref = trained
    shutil.copytree(ref, tmp_path / "res")
    manifest = tmp_path / "res" / "t" / "manifest.json"
    manifest.write_bytes(damage)
    assert main(["report", str(manifest.parent)]) == 2
    err = capsys.readouterr().err
    assert f"{manifest}:" in err and "Traceback" not in err and len(err) < 3000


def test_a_damaged_cell_in_bench_report_leaves_the_rest_readable(trained: tuple[Path, Path], tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    _, ref = trained
    shutil.copytree(ref, tmp_path / "res")
    store = Store(tmp_path / "res" / "t")
    fp = next(c.fingerprint for c in store.read_manifest().cells if c.evaluation == "pgd" and c.eps_index == 1)
    store.path(fp).write_bytes(store.path(fp).read_bytes()[:200])  # truncated
    capsys.readouterr()
    assert main(["report", str(store.root)]) == 2
    out = capsys.readouterr()
    assert "Robust accuracy (%)" in out.out and "clean" in out.out  # what is readable is reported
    assert f"error: {store.path(fp)}: not a readable result cell" in out.err and "Traceback" not in out.err
    tidy = pd.read_csv(store.root / "tidy.csv")
    assert not ((tidy.evaluation == "pgd") & (tidy.eps == 0.1)).any()
    assert ((tidy.evaluation == "pgd") & (tidy.eps == 0.05)).any()


@pytest.mark.parametrize("kind", ["corrupt", "unsafe", "wrong-architecture"])
def test_a_checkpoint_that_cannot_be_loaded_is_bad_input_said_once(tmp_path: Path, cache: Path, kind: str,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    net = build_architecture("mlp", 10, 1, 8)
    good = tmp_path / "good.safetensors"
    save_safetensors(net.state_dict(), good, {})
    if kind == "corrupt":
        bad = tmp_path / "bad.safetensors"
        bad.write_bytes(good.read_bytes()[:100])
    elif kind == "unsafe":
        bad = tmp_path / "bad.pt"

        class Payload:
            def __reduce__(self) -> tuple[object, tuple[str]]:
                return (print, ("code ran",))

        torch.save({"w": Payload()}, bad)
    else:
        bad = tmp_path / "bad.safetensors"
        save_safetensors(build_architecture("linear", 10, 1, 8).state_dict(), bad, {})
    models = f"""
      good: {{checkpoint: {good}, arch: mlp}}
      bad: {{checkpoint: {bad}, arch: mlp}}
    """
    suite = make_suite(tmp_path, cache, models=models, evals=EVALS, n=10)
    res = tmp_path / "res"
    assert bench_run(suite, res) == 2
    captured = capsys.readouterr()
    assert "code ran" not in captured.out
    err = captured.err
    assert err.count(f"{suite}: models.bad") == 1 and "Traceback" not in err, err
    assert "FAILED" not in err
    store = Store(res / "t")
    cells = store.read_manifest().cells
    assert all(store.has(c.fingerprint) == (c.model == "good") for c in cells)  # the other model finished
