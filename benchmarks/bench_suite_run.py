"""First run and rerun of a shipped suite: wall time, peak memory, and rerun / first-run ratio.

Targets: the first ``bench run suites/digits.yaml`` (training included) finishes within 2.5 minutes
on a 2-core CPU with nothing else running (issue 12; it took 5 min 18 s with the standard AutoAttack
at both radii, 3 min 20 s after the PGD and cascade work), with peak memory under 4 GiB, and running
the finished suite again takes at most 5% of the first run. Both runs are real ``bench run`` processes in a fresh results
folder and a fresh recipe cache, measured in this one script.

    python benchmarks/bench_suite_run.py [--suite suites/digits.yaml]
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def timed_run(args: list[str]) -> tuple[float, float, list[str]]:
    """Run ``python -m benchmark ARGS``; return (seconds, peak RSS of that child in GiB, its cost lines)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "benchmark", *args], check=True, cwd=REPO,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seconds = time.perf_counter() - t0
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    # ru_maxrss of children is the maximum over all waited-for children; the first child sets it.
    cost = [line for line in done.stdout.splitlines() if "forward +" in line and "passes" in line]
    return seconds, max(peak_kib, before) / 2**20, cost


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suite", default="suites/digits.yaml")
    ap.add_argument("--max-first-seconds", type=float, default=150.0)
    ap.add_argument("--max-peak-gib", type=float, default=4.0)
    ap.add_argument("--max-rerun-ratio", type=float, default=0.05)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        common = [a.suite, "--results-dir", f"{tmp}/results", "--set", f"cache_dir={tmp}/cache", "--no-progress"]
        first, peak, cost = timed_run(["run", *common])
        rerun, _, _ = timed_run(["run", *common])
    ratio = rerun / first
    rows = [
        ("first run (train + evaluate)", f"{first:8.1f} s", f"<= {a.max_first_seconds:.0f} s", first <= a.max_first_seconds),
        ("peak memory of the first run", f"{peak:8.2f} GiB", f"< {a.max_peak_gib:.1f} GiB", peak < a.max_peak_gib),
        ("rerun of the finished suite", f"{rerun:8.1f} s", "", True),
        ("rerun / first run", f"{ratio:8.4f}", f"<= {a.max_rerun_ratio}", ratio <= a.max_rerun_ratio),
    ]
    print(f"suite: {a.suite}")
    print("cost of the first run per evaluation (bench run's summary):")
    print("\n".join(cost))
    print(f"{'measure':<32} {'value':>14}  {'target':<12} result")
    for name, value, target, ok in rows:
        print(f"{name:<32} {value:>14}  {target:<12} {'PASS' if ok else 'FAIL'}")
    return 0 if all(r[3] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
