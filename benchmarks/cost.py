"""What stage-1 reuse and parallel sweep workers save, and whether bf16 costs accuracy.

    python benchmarks/cost.py [--dataset mnist-lt] [--epochs 3] [--stage2-epochs 1] [--data-root DIR]
    python benchmarks/cost.py --from-results ~/ltb/cifar10     # accounting over finished runs, no training

1. The six-method comparison (ce, label-smoothing, crt, lws, tau-norm, dasl) on one dataset: wall time with
   stage-1 reuse (one results folder) against every method from scratch (a folder each), in one process;
   and the best ratio reuse could reach (only repeated stage-1 trainings can go: 3 distinct stage 1s in 6).
2. The same comparison as a sweep with --jobs 2 (two workers sharing the cores) against --jobs 1; and what
   two 1-thread processes gain over one 2-thread process on pure compute, the bound for --jobs 2.
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

from speed import BATCH, limit_step  # benchmarks/ is on sys.path when a script in it runs

SIX = ["ce", "label-smoothing", "crt", "lws", "tau-norm", "dasl"]


def stage_seconds(stages: list[dict]) -> tuple[float, float]:
    """Recorded time of these stage records with each stage trained once (by key), and as often as it occurs
    (a reused record counts what the run that trained it recorded)."""
    trained = {stage["key"]: stage.get("seconds") or 0.0 for stage in stages if not stage.get("reused")}
    every = sum(trained.get(stage["key"], 0.0) if stage.get("reused") else stage.get("seconds") or 0.0
                for stage in stages)
    return sum(trained.values()), every


def from_results(folder: Path) -> dict:
    records = [json.loads(f.read_text())["stages"] for f in sorted(folder.glob("runs/*/metrics.json"))]
    reuse, scratch = stage_seconds([stage for stages in records for stage in stages])
    print(f"{len(records)} finished runs in {folder}: recorded stage time with reuse {reuse:.0f} s, from scratch "
          f"{scratch:.0f} s, ratio {reuse / scratch:.2f} (target <= 0.5)")
    return {"runs": len(records), "with_reuse_s": reuse, "from_scratch_s": scratch, "ratio": reuse / scratch}


def reuse_bounds(metrics: dict, scratch_s: float) -> dict:
    """What reuse can save at best, from the from-scratch runs' recorded stage-1 times: only repeated
    stage-1 trainings go (ce's stage 1 serves crt, lws, tau-norm; label-smoothing and dasl train their own),
    so even with free stage 2s, evaluations and start-up the ratio cannot go below distinct / all stage 1s."""
    first = [run["stages"][0] for run in metrics.values()]
    once, every = stage_seconds(first)
    return {"distinct_stage1": len({stage["key"] for stage in first}),
            "reuse_ideal_ratio": (scratch_s - (every - once)) / scratch_s, "reuse_floor_ratio": once / every}


def timed_runs(methods, args, shared: bool, precision: str = "auto", dataset: str | None = None,
               epochs: int | None = None) -> tuple[float, dict]:
    """Wall time of ``methods`` run one after the other in this process, after an untimed warm-up."""
    from ltbench.config import RunConfig
    from ltbench.engine.progress import Reporter
    from ltbench.engine.runner import execute

    def run_all(names, root: Path, epochs: int, stage2_epochs: int) -> dict:
        metrics = {}
        for method in names:
            config = RunConfig(method=method, dataset=dataset or args.dataset, data_root=args.data_root,
                               recipe="cpu", epochs=epochs, stage2_epochs=stage2_epochs, precision=precision,
                               out=str(root if shared else root / method), run_name=method)
            metrics[method] = execute(config, Reporter(quiet=True))
        return metrics

    root = Path(tempfile.mkdtemp(prefix="ltbench-cost-"))
    # One-time costs of a process (lazy imports, oneDNN generating its kernels for each shape) must not land
    # on whichever side runs first: one-epoch runs pay them (crt and dasl between them take every kernel
    # path of the six methods: full and frozen training steps, DaSL's auxiliary network).
    run_all(["crt", "dasl"] if len(methods) > 1 else methods, root / "warm-up", 1, 1)
    start = time.perf_counter()
    metrics = run_all(methods, root / "timed", epochs or args.epochs, args.stage2_epochs)
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


def limit_rate(threads: int, precision: str, start_at: float, seconds: float) -> float:
    """images/s of fwd + bwd + SGD on one fixed CIFAR-sized batch (ResNet-32) with ``threads`` torch threads,
    counted over the wall-clock window [start_at, start_at + seconds], the same window for every process."""
    import torch

    from ltbench.engine.precision import resolve_device, resolve_precision
    from ltbench.models import build_model

    torch.set_num_threads(threads)
    device = resolve_device("cpu")
    step = limit_step(build_model("resnet32", 10, 3).to(memory_format=torch.channels_last), device,
                      resolve_precision(precision, device))
    counted = 0
    while True:  # warms up before the window, keeps the cores busy until it ends
        step()
        now = time.time()
        if now > start_at + seconds:
            return counted * BATCH / seconds
        if now > start_at:
            counted += 1


def parallel_bound(precision: str = "auto", seconds: float = 20.0) -> dict:
    """What --jobs 2 can gain at most on pure compute: two 1-thread processes side by side against one
    2-thread process (the compute limit; separate processes as in a sweep, timed over the same window)."""
    def rates(*threads: int) -> float:
        start_at = time.time() + 25  # after imports and the bf16 warm-up
        processes = [subprocess.Popen([sys.executable, __file__, "--limit-rate", str(t), precision, str(start_at),
                                       str(seconds)], stdout=subprocess.PIPE, text=True) for t in threads]
        return sum(float(process.communicate()[0].split()[-1]) for process in processes)

    one, two = rates(2), rates(1, 1)
    return {"one_2thread_img_s": one, "two_1thread_img_s": two, "parallel_bound": two / one}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="mnist-lt")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--stage2-epochs", type=int, default=1)
    parser.add_argument("--precision-epochs", type=int, default=5, help="epochs of the bf16 / fp32 CE runs")
    parser.add_argument("--skip", nargs="*", default=[], choices=["reuse", "jobs", "bound", "precision"])
    parser.add_argument("--limit-rate", nargs=4, help=argparse.SUPPRESS)  # THREADS PRECISION START_AT SECONDS
    parser.add_argument("--from-results", type=Path, default=None)
    parser.add_argument("--out", default=None, help="write the numbers as JSON here")
    args = parser.parse_args(argv)
    if args.from_results:
        return from_results(args.from_results)
    if args.limit_rate:  # one side of parallel_bound, in its own process
        threads, precision, start_at, seconds = args.limit_rate
        print(limit_rate(int(threads), precision, float(start_at), float(seconds)))
        return {}

    results = {"dataset": args.dataset, "epochs": args.epochs, "stage2_epochs": args.stage2_epochs}
    if "reuse" not in args.skip:
        reuse, _ = timed_runs(SIX, args, shared=True)
        scratch, metrics = timed_runs(SIX, args, shared=False)
        bounds = reuse_bounds(metrics, scratch)
        results.update(with_reuse_s=reuse, from_scratch_s=scratch, reuse_ratio=reuse / scratch, **bounds)
        print(f"six methods on {args.dataset} ({args.epochs} + {args.stage2_epochs} epochs): with stage-1 reuse "
              f"{reuse:.0f} s, from scratch {scratch:.0f} s, ratio {reuse / scratch:.2f} (target <= 0.5)\n"
              f"  the best reuse can do: {bounds['reuse_ideal_ratio']:.2f} (from scratch minus the repeated stage-1 "
              f"trainings); {bounds['reuse_floor_ratio']:.2f} if nothing but stage 1 cost time "
              f"({bounds['distinct_stage1']} distinct stage 1s in {len(SIX)} runs)")
    if "jobs" not in args.skip:
        one, two = sweep_time(args, 1), sweep_time(args, 2)
        results.update(sweep_jobs1_s=one, sweep_jobs2_s=two, jobs_speedup=one / two)
        print(f"six-method sweep: --jobs 1 {one:.0f} s, --jobs 2 {two:.0f} s, throughput x{one / two:.2f} "
              f"(target >= 1.1)")
    if "bound" not in args.skip:
        bound = parallel_bound()
        results.update(bound)
        print(f"compute limit (ResNet-32, batch {BATCH}): one 2-thread process {bound['one_2thread_img_s']:.0f} img/s, "
              f"two 1-thread processes together {bound['two_1thread_img_s']:.0f} img/s: --jobs 2 can gain at most "
              f"x{bound['parallel_bound']:.2f} on compute")
    if "precision" not in args.skip:
        accuracy = {}
        for precision in ("bf16", "fp32"):
            seconds, metrics = timed_runs(["ce"], args, shared=True, precision=precision, dataset="cifar10-lt",
                                          epochs=args.precision_epochs)
            accuracy[precision] = {"acc": metrics["ce"]["acc"], "seconds": seconds}
        results["precision"] = accuracy
        print("CE on cifar10-lt, {} epochs, seed 0: ".format(args.precision_epochs) + ", ".join(
            f"{p} top-1 {v['acc']:.2f} % in {v['seconds']:.0f} s" for p, v in accuracy.items()))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
