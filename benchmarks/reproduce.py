"""Re-run the smallest committed reference result (MNIST-LT IF100, seed 0, every method) and compare it
with the numbers committed in results/cpu/mnist-lt-if100/runs/.

    python benchmarks/reproduce.py [--data-root ~/data] [--tolerance 1.5]

MNIST comes from --data-root (torchvision's MNIST/raw layout; `ltbench run --download` fetches it) or
from ../shared/data/mnist when present. On the machine that made the numbers (same CPU type, same torch)
the runs are deterministic and the differences are 0. Elsewhere, other bf16 kernels (another CPU's
AVX512/AMX path, or a GPU) round differently and a 10-epoch run drifts: --tolerance (default 1.5 points
of top-1, many / medium / few accuracy and ECE) is the bound we hold a reproduction to; the spread over
our 3 seeds (results/README.md, MNIST-LT) is the scale it is measured against.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO / "results" / "cpu" / "mnist-lt-if100"
SUITE = REFERENCE / "mnist-methods-seed0.toml"
KEYS = ("acc", "many_acc", "medium_acc", "few_acc", "ece")


def runs_by_identity(folder: Path) -> dict:
    """(method, options, seed) -> metrics of every finished run under ``folder`` (read via ltbench.record)."""
    from ltbench.record import is_finished, read, run_folders

    runs = {}
    for run in filter(is_finished, run_folders(folder)):
        record = read(run)
        config = record.config
        identity = (config["method"], json.dumps(config["method_options"], sort_keys=True), config["seed"])
        runs[identity] = record.metrics
    return runs


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--tolerance", type=float, default=1.5)
    args = parser.parse_args(argv)
    data_root = args.data_root
    shared = REPO.parent / "shared" / "data"
    if data_root is None and (shared / "mnist").is_dir():
        data_root = str(shared)
    suite_text = SUITE.read_text() + (f'data_root = "{data_root}"\n' if data_root else "")
    with tempfile.TemporaryDirectory(prefix="ltbench-reproduce-") as tmp:
        suite = Path(tmp) / SUITE.name
        suite.write_text(suite_text)
        subprocess.run([sys.executable, "-m", "ltbench", "sweep", str(suite), "--results", f"{tmp}/results", "-q"],
                       check=True)
        fresh = runs_by_identity(Path(tmp) / "results")
    committed = runs_by_identity(REFERENCE)
    worst, failures = 0.0, []
    print(f"{'method':<28}" + "".join(f"{k:>18}" for k in KEYS))
    for identity, metrics in sorted(fresh.items()):
        reference = committed.get(identity)
        if reference is None:
            failures.append(f"{identity}: no committed run to compare with")
            continue
        cells = []
        for key in KEYS:
            new, old = metrics.get(key), reference.get(key)
            if new is None or old is None:
                cells.append(f"{'-':>18}")
                continue
            worst = max(worst, abs(new - old))
            if abs(new - old) > args.tolerance:
                failures.append(f"{identity[0]} {key}: {new:.2f} vs committed {old:.2f}")
            cells.append(f"{new:8.2f} ({new - old:+5.2f})")
        print(f"{identity[0]:<28}" + "".join(cells))
    print(f"largest difference {worst:.2f} points (tolerance {args.tolerance})")
    for failure in failures:
        print(f"FAIL {failure}")
    print("reproduced" if not failures else "NOT reproduced")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
