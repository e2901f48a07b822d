"""Benchmark (not a test): the cost of DaSL's stage 1 relative to plain CE's, side by side.

Both methods run through the trainer a run uses (``ltbench.engine.trainer.Trainer.fit_stage``) and their
real losses, on ResNet-32 at batch 128 with synthetic 32x32 images (10 classes), in one process, same
precision. Epochs alternate CE / DaSL after a warm-up so that drift (turbo, other load) hits both alike;
the ratio uses the median epoch time (the ratio of the fastest epochs is printed too: on a shared machine
it is the least disturbed). Target: DaSL / CE <= 1.35. On a busy 2-core machine ``--threads 1`` avoids
OpenMP spin-waiting, which otherwise dominates both timings.

    python benchmarks/dasl_cost.py                       # CPU, fp32
    python benchmarks/dasl_cost.py --device cuda --precision bf16
    python benchmarks/dasl_cost.py --profile             # + torch.profiler table of one DaSL epoch
"""
from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace

import torch

from ltbench.config import get_recipe
from ltbench.engine.trainer import Trainer, build_stage_model
from ltbench.method import DataInfo, create_method


class SyntheticLoader:
    """Pre-made random batches behind the loader interface the loop uses (no augmentation cost)."""

    def __init__(self, batches: int, batch_size: int, num_classes: int, device: torch.device, image_size: int = 32):
        gen = torch.Generator().manual_seed(0)
        self.data = [{"x": torch.randn(batch_size, 3, image_size, image_size, generator=gen).to(device),
                      "y": torch.randint(0, num_classes, (batch_size,), generator=gen).to(device)}
                     for _ in range(batches)]
        for batch in self.data:
            batch["idx"] = torch.arange(batch_size, device=device)

    def num_batches(self, batch_size: int, world: int = 1) -> int:
        return len(self.data)

    def epoch(self, kind, generator, batch_size, progress=0.0, rank=0, world=1, start_batch=0):
        yield from self.data


BENCH_KEY, BENCH_SEED = "0" * 12, 0  # a fixed stage key and seed for Trainer.fit_stage


def prepare(method_name: str, options: dict, device: torch.device, batch_size: int, loader, precision: str,
            num_classes: int = 10):
    """The trainer, stage state and hooks of the method's stage 1 (one epoch long), set up as a run sets
    them up (``build_stage_model``, ``Trainer.begin_stage``)."""
    method = create_method(method_name, options)
    counts = torch.full((num_classes,), 100, device=device)
    info = DataInfo(num_classes, counts, torch.zeros(num_classes, device=device), device)
    model = build_stage_model(method, "resnet32", 3, info, seed=0)
    stage = method.stages(get_recipe("paper"))[0]
    stage = replace(stage, optim=replace(stage.optim, epochs=1, batch_size=batch_size))
    trainer = Trainer(model, info, {"train": loader}, precision)
    return trainer, trainer.begin_stage(0, stage, method), method


def run_epoch(setup) -> float:
    """Seconds of one training epoch (one ``Trainer.fit_stage`` of the one-epoch stage)."""
    trainer, state, method = setup
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    trainer.fit_stage(state, BENCH_KEY, BENCH_SEED, method)
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"))
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--batches", type=int, default=12, help="iterations per timed epoch")
    parser.add_argument("--epochs", type=int, default=4, help="timed epochs per method (after 1 warm-up)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("-o", "--opt", action="append", default=[], help="DaSL option KEY=VALUE")
    parser.add_argument("--profile", action="store_true", help="print a torch.profiler table of one DaSL epoch")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    options = dict(pair.split("=", 1) for pair in args.opt)
    loader = SyntheticLoader(args.batches, args.batch_size, 10, device)
    setups = {name: prepare(name, opts, device, args.batch_size, loader, args.precision)
              for name, opts in (("ce", {}), ("dasl", options))}
    for setup in setups.values():  # warm-up: allocator, kernels, caches
        run_epoch(setup)
    times = {name: [] for name in setups}
    for _ in range(args.epochs):
        for name, setup in setups.items():
            times[name].append(run_epoch(setup))
    images = args.batches * args.batch_size
    print(f"ResNet-32, batch {args.batch_size}, 32x32 synthetic, {args.device} {args.precision}, "
          f"{torch.get_num_threads()} threads, {args.batches} iterations x {args.epochs} epochs each, "
          f"DaSL options {options or 'defaults'}")
    median = {name: statistics.median(t) for name, t in times.items()}
    for name in setups:
        print(f"  {name:5s} stage 1: {images / median[name]:8.1f} images/s  (median epoch {median[name]:.3f} s)")
    print(f"  ratio DaSL / CE epoch time: {median['dasl'] / median['ce']:.3f}  (target <= 1.35)")
    fastest = {name: min(t) for name, t in times.items()}  # least disturbed by other load on the machine
    print(f"  ratio of the fastest epochs: {fastest['dasl'] / fastest['ce']:.3f}")
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with profile(activities=activities) as prof:
            run_epoch(setups["dasl"])
        sort = "cuda_time_total" if device.type == "cuda" else "cpu_time_total"
        print(prof.key_averages().table(sort_by=sort, row_limit=25))


if __name__ == "__main__":
    main()
