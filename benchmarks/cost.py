"""What stage-1 reuse and parallel sweep workers save, and whether bf16 costs accuracy.

    python benchmarks/cost.py [--dataset mnist-lt] [--epochs 3] [--stage2-epochs 1] [--data-root DIR]
    python benchmarks/cost.py --from-results ~/ltb/cifar10     # accounting over finished runs, no training

1. The six-method comparison (ce, label-smoothing, crt, lws, tau-norm, dasl) on one dataset: wall time with
   stage-1 reuse (one results folder) against every method from scratch (a folder each), in one process.
2. The same comparison as a sweep with --jobs 2 (one thread per worker) against --jobs 1 (two threads).
3. A short CE run on CIFAR-10-LT in bf16 and in fp32 (same seed): top-1 side by side.

``--from-results DIR`` instead sums the recorded training time of every stage of the finished runs in DIR:
with reuse, a reused stage costs nothing; from scratch, every run would have trained it.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SIX = ["ce", "label-smoothing", "crt", "lws", "tau-norm", "dasl"]


def from_results(folder: Path) -> dict:
    records = [json.loads(f.read_text())["stages"] for f in sorted(folder.glob("runs/*/metrics.json"))]
    trained = {stage["key"]: stage.get("seconds") or 0.0 for stages in records for stage in stages
               if not stage.get("reused")}
    reuse = sum(trained.values())  # every stage trained once
    scratch = sum(trained.get(stage["key"], 0.0) for stages in records for stage in stages)
    print(f"{len(records)} finished runs in {folder}: recorded stage time with reuse {reuse:.0f} s, from scratch "
          f"{scratch:.0f} s, ratio {reuse / scratch:.2f} (target <= 0.5)")
    return {"runs": len(records), "with_reuse_s": reuse, "from_scratch_s": scratch, "ratio": reuse / scratch}


def timed_runs(methods, args, shared: bool, precision: str = "auto", dataset: str | None = None) -> tuple[float, dict]:
    from ltbench.config import RunConfig
    from ltbench.engine.progress import Reporter
    from ltbench.engine.runner import execute

    root = Path(tempfile.mkdtemp(prefix="ltbench-cost-"))
    metrics = {}
    start = time.perf_counter()
    for method in methods:
        out = root if shared else root / method
        config = RunConfig(method=method, dataset=dataset or args.dataset, data_root=args.data_root, recipe="cpu",
                           epochs=args.epochs, stage2_epochs=args.stage2_epochs, precision=precision, out=str(out),
                           run_name=method)
        metrics[method] = execute(config, Reporter(quiet=True))
    seconds = time.perf_counter() - start
    shutil.rmtree(root, ignore_errors=True)
    return seconds, metrics


def sweep_time(args, jobs: int) -> float:
    root = Path(tempfile.mkdtemp(prefix="ltbench-cost-sweep-"))
    suite = root / "six.toml"
    suite.write_text(f'methods = {json.dumps(SIX)}\ndatasets = ["{args.dataset}"]\nrecipe = "cpu"\n'
                     f"epochs = {args.epochs}\nstage2_epochs = {args.stage2_epochs}\n"
                     + (f'data_root = "{args.data_root}"\n' if args.data_root else ""))
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "ltbench", "sweep", str(suite), "--results", str(root / "results"),
                    "--jobs", str(jobs), "-q"], check=True)
    seconds = time.perf_counter() - start
    shutil.rmtree(root, ignore_errors=True)
    return seconds


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="mnist-lt")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--stage2-epochs", type=int, default=1)
    parser.add_argument("--precision-epochs", type=int, default=5, help="epochs of the bf16 / fp32 CE runs")
    parser.add_argument("--skip", nargs="*", default=[], choices=["reuse", "jobs", "precision"])
    parser.add_argument("--from-results", type=Path, default=None)
    parser.add_argument("--out", default=None, help="write the numbers as JSON here")
    args = parser.parse_args(argv)
    if args.from_results:
        return from_results(args.from_results)

    results = {"dataset": args.dataset, "epochs": args.epochs, "stage2_epochs": args.stage2_epochs}
    if "reuse" not in args.skip:
        reuse, _ = timed_runs(SIX, args, shared=True)
        scratch, _ = timed_runs(SIX, args, shared=False)
        results.update(with_reuse_s=reuse, from_scratch_s=scratch, reuse_ratio=reuse / scratch)
        print(f"six methods on {args.dataset} ({args.epochs} + {args.stage2_epochs} epochs): with stage-1 reuse "
              f"{reuse:.0f} s, from scratch {scratch:.0f} s, ratio {reuse / scratch:.2f} (target <= 0.5)")
    if "jobs" not in args.skip:
        one, two = sweep_time(args, 1), sweep_time(args, 2)
        results.update(sweep_jobs1_s=one, sweep_jobs2_s=two, jobs_speedup=one / two)
        print(f"six-method sweep: --jobs 1 {one:.0f} s, --jobs 2 {two:.0f} s, throughput x{one / two:.2f} "
              f"(target >= 1.1)")
    if "precision" not in args.skip:
        accuracy = {}
        for precision in ("bf16", "fp32"):
            local = argparse.Namespace(**{**vars(args), "epochs": args.precision_epochs})
            seconds, metrics = timed_runs(["ce"], local, shared=True, precision=precision, dataset="cifar10-lt")
            accuracy[precision] = {"acc": metrics["ce"]["acc"], "seconds": seconds}
        results["precision"] = accuracy
        print("CE on cifar10-lt, {} epochs, seed 0: ".format(args.precision_epochs) + ", ".join(
            f"{p} top-1 {v['acc']:.2f} % in {v['seconds']:.0f} s" for p, v in accuracy.items()))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
