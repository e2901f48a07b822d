"""Training speed of ltbench against the compute limit and a reference-style loop, side by side.

    python benchmarks/speed.py [--data-root ~/data] [--device auto] [--epochs 1] [--out results/speed.json]
    python benchmarks/speed.py --synthetic --max-images 64 --batch-size 16 --limit-steps 2 --skip-reference --skip-dasl
                                                                             # a dry run: seconds, figures meaningless

On CIFAR-10-LT IF100 (the real images when found under --data-root, else synthetic 32x32 images of the
same size, which the output says), ResNet-32, batch 128, one process, it measures images/s of
  (a) the limit: forward + backward + SGD step on one fixed in-memory batch, at ltbench's precision;
  (b) ltbench's stage-1 epoch (CE): on-device uint8 data, batched crop/flip, channels_last, autocast;
  (c) the reference-style loop of the field's anchors: torchvision ImageFolder of PIL images +
      RandomCrop(32, 4) + RandomHorizontalFlip + ToTensor + Normalize + DataLoader(shuffle, 2 workers), fp32;
  (d) DaSL's stage-1 epoch; (e) a cRT stage-2 epoch (frozen backbone) and the test-set evaluation;
and prints b/a, b/c, d/b with the peak memory and the targets (TARGETS: b/a at least 0.95 on CPU, 0.9 on a
GPU; b/c at least 1.4 on CPU, 5 on a GPU; DaSL at most 1.35x CE's cost). Timings are measured here, never
asserted in tests.
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from ltbench.config import RECIPES
from ltbench.data import ArraySplit, build_data
from ltbench.data.base import Augment
from ltbench.data.loaders import TensorLoader
from ltbench.engine.loop import evaluate
from ltbench.engine.precision import autocast, resolve_device, resolve_precision
from ltbench.engine.trainer import Trainer, build_stage_model
from ltbench.errors import LTBenchError
from ltbench.method import DataInfo, create_method
from ltbench.models import build_model

BATCH = 128
BENCH_KEY, BENCH_SEED = "0" * 12, 0  # a fixed stage key and seed for Trainer.fit_stage
# (ratio, device type) -> lowest acceptable value; d/b is a speed ratio, so DaSL's cost <= 1.35x CE's is >= 1 / 1.35
TARGETS = {("b/a", "cpu"): 0.95, ("b/a", "cuda"): 0.9, ("b/c", "cpu"): 1.4, ("b/c", "cuda"): 5.0,
           ("d/b", "cpu"): 1 / 1.35, ("d/b", "cuda"): 1 / 1.35}


def load_cifar(data_root: str | None, synthetic: bool = False):
    """The real CIFAR-10-LT IF100 subset, or synthetic images with its exact class counts."""
    if not synthetic:
        try:
            data = build_data("cifar10-lt", data_root, 100)
            return data, "CIFAR-10-LT IF100 (real images)"
        except LTBenchError as exc:
            print(f"note: {exc}\n      -> using synthetic 32x32 images with CIFAR-10-LT IF100's class counts")
    from ltbench.data.longtail import lt_counts

    counts = lt_counts(5000, 10, 100)
    rng = np.random.RandomState(0)
    labels = np.repeat(np.arange(10), counts)
    train = ArraySplit(rng.randint(0, 256, (len(labels), 32, 32, 3), dtype=np.uint8), labels)
    test = ArraySplit(rng.randint(0, 256, (10000, 32, 32, 3), dtype=np.uint8), np.repeat(np.arange(10), 1000))

    class Bundle:  # the few fields this benchmark reads
        pass

    data = Bundle()
    data.train, data.test, data.class_counts, data.source = train, test, np.array(counts), None
    return data, "synthetic 32x32 images" + ("" if synthetic else " (CIFAR-10 not found)")


def shrink(data, max_images: int) -> None:
    """Keep a seeded random ``max_images`` of the train and of the test images (tiny dry runs)."""
    rng = np.random.RandomState(0)
    for name in ("train", "test"):
        split = getattr(data, name)
        if len(split) > max_images:
            keep = np.sort(rng.choice(len(split), max_images, replace=False))
            setattr(data, name, ArraySplit(split.images[keep], split.labels[keep]))
            if name == "train" and getattr(data, "train_indices", None) is not None:
                data.train_indices = data.train_indices[keep]
    data.class_counts = np.bincount(data.train.labels, minlength=10)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def limit_step(model, device, precision, batch: int = BATCH):
    """One fwd + bwd + SGD step on one fixed in-memory batch: the compute limit, with no data path."""
    x = torch.randn(batch, 3, 32, 32, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,), device=device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=2e-4)
    model.train()

    def step():
        with autocast(device, precision):
            loss = F.cross_entropy(model(x).logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def measure_limit(model, device, precision, steps: int, batch: int = BATCH) -> float:
    step = limit_step(model, device, precision, batch)
    for _ in range(5):
        step()
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return steps * batch / (time.perf_counter() - start)


def ltbench_epoch(method, stage_index: int, model, loader, info, precision, epochs: int, batch: int = BATCH) -> float:
    """images/s of stage ``stage_index`` of ``method`` on ``model``, through the trainer a run uses
    (``Trainer.fit_stage``: seeding, trainable parameters, optimizer, hooks, the loop)."""
    stage = method.stages(RECIPES["cpu"])[stage_index]
    # the first epoch warms up (kernel selection, bf16 JIT); the cpu recipe's batch is BATCH (128)
    stage = replace(stage, optim=replace(stage.optim.with_epochs(epochs + 1), batch_size=batch))
    trainer = Trainer(model, info, {"train": loader}, precision)
    state = trainer.begin_stage(stage_index, stage, method)
    result = trainer.fit_stage(state, BENCH_KEY, BENCH_SEED, method)
    return float(np.mean([stats["images_per_s"] for stats in result.epochs[1:]]))


def reference_epoch(data_root: str | None, train_indices, device, batch: int = BATCH) -> float | None:
    """The anchors' pipeline: ImageFolder/PIL + per-image transforms + DataLoader(2 workers), fp32."""
    from torchvision import datasets, transforms

    from ltbench.data import default_data_root

    root = Path(data_root or default_data_root()).expanduser()
    folder = next((p / "train" for p in (root / "cifar10", root) if (p / "train" / "airplane").is_dir()), None)
    if folder is None or train_indices is None:
        print("note: no CIFAR-10 image folders found: the reference-style loop (c) is skipped")
        return None
    transform = transforms.Compose([
        transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(), transforms.ToTensor(),
        transforms.Normalize((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))])
    dataset = torch.utils.data.Subset(datasets.ImageFolder(str(folder), transform), train_indices.tolist())
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=2,
                                         pin_memory=device.type == "cuda", persistent_workers=True)
    model = build_model("resnet32", 10, 3).to(device)  # fp32, default memory format: as the anchors run
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=2e-4)
    model.train()
    rates = []
    for epoch in range(2):  # first epoch warms the workers up
        seen, start = 0, time.perf_counter()
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            loss = F.cross_entropy(model(x).logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            seen += len(y)
        sync(device)
        if epoch:
            rates.append(seen / (time.perf_counter() - start))
    return float(np.mean(rates))


def peak_memory_mb(device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--epochs", type=int, default=1, help="timed epochs per measurement (after 1 warm-up)")
    parser.add_argument("--limit-steps", type=int, default=40)
    parser.add_argument("--skip-reference", action="store_true")
    parser.add_argument("--skip-dasl", action="store_true")
    parser.add_argument("--batch-size", type=int, default=BATCH, help=f"batch of every measurement (default {BATCH})")
    parser.add_argument("--synthetic", action="store_true", help="synthetic images even where CIFAR-10 is found")
    parser.add_argument("--max-images", type=int, default=None, help="keep this many train and test images "
                        "(a dry run in seconds; the figures then mean little)")
    parser.add_argument("--out", default=None, help="write the numbers as JSON here")
    args = parser.parse_args(argv)

    device = resolve_device(args.device)
    precision = resolve_precision(args.precision, device)
    torch.manual_seed(0)
    data, data_label = load_cifar(args.data_root, args.synthetic)
    if args.max_images:
        shrink(data, args.max_images)
        data_label += f", cut to {len(data.train)} train / {len(data.test)} test images"
    train = TensorLoader(data.train, 10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616),
                         Augment(4, True), device)
    test = TensorLoader(data.test, 10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616),
                        Augment(4, True), device)
    counts = torch.as_tensor(data.class_counts, device=device)
    info = DataInfo(10, counts, torch.zeros(10, dtype=torch.long, device=device), device)
    print(f"{data_label}: {len(train)} train images; ResNet-32, batch {args.batch_size}, {device.type} {precision}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}")

    results = {}
    model = build_model("resnet32", 10, 3).to(device).to(memory_format=torch.channels_last)
    results["a_limit"] = measure_limit(model, device, precision, args.limit_steps, args.batch_size)
    print(f"(a) limit (fixed batch, fwd+bwd+step):     {results['a_limit']:8.0f} img/s")
    ce = create_method("ce")
    model = build_stage_model(ce, "resnet32", 3, info, seed=0)
    results["b_ltbench_ce"] = ltbench_epoch(ce, 0, model, train, info, precision, args.epochs, batch=args.batch_size)
    print(f"(b) ltbench stage-1 epoch (CE):            {results['b_ltbench_ce']:8.0f} img/s")
    results["e_crt_stage2"] = ltbench_epoch(create_method("crt"), 1, model, train, info, precision, args.epochs,
                                            batch=args.batch_size)  # on CE's model, as a cRT run reuses it
    print(f"(e) cRT stage-2 epoch (frozen backbone):   {results['e_crt_stage2']:8.0f} img/s")
    sync(device)
    start = time.perf_counter()
    evaluate(model, test, 1024, precision, device)
    sync(device)
    results["e_test_eval"] = len(test) / (time.perf_counter() - start)
    print(f"(e) test-set evaluation:                   {results['e_test_eval']:8.0f} img/s")
    if not args.skip_dasl:
        try:
            dasl = create_method("dasl")
            results["d_dasl"] = ltbench_epoch(dasl, 0, build_stage_model(dasl, "resnet32", 3, info, seed=0), train,
                                              info, precision, args.epochs, batch=args.batch_size)
            print(f"(d) DaSL stage-1 epoch:                    {results['d_dasl']:8.0f} img/s")
        except LTBenchError as exc:
            print(f"(d) DaSL not available: {exc}")
    if not args.skip_reference:
        reference = reference_epoch(args.data_root, getattr(data, "train_indices", None), device, args.batch_size)
        if reference:
            results["c_reference"] = reference
            print(f"(c) reference-style loop (PIL+DataLoader, fp32): {reference:8.0f} img/s")
    ratios = {"b/a": results["b_ltbench_ce"] / results["a_limit"]}
    if "c_reference" in results:
        ratios["b/c"] = results["b_ltbench_ce"] / results["c_reference"]
    if "d_dasl" in results:
        ratios["d/b"] = results["d_dasl"] / results["b_ltbench_ce"]
    kind = "cuda" if device.type == "cuda" else "cpu"
    targets = {k: TARGETS[k, kind] for k in ratios}
    met = {k: ratios[k] >= targets[k] for k in ratios}
    print("ratios: " + ", ".join(f"{k} = {v:.2f} (target >= {targets[k]:.2f}: {'met' if met[k] else 'MISSED'})"
                                 for k, v in ratios.items()))
    if "d/b" in ratios:
        print(f"DaSL stage-1 epoch costs {1 / ratios['d/b']:.2f}x CE's")
    results.update(ratios=ratios, targets=targets, met=met, peak_memory_mb=peak_memory_mb(device), data=data_label, device=str(device),
                   precision=precision, threads=torch.get_num_threads(), torch=torch.__version__,
                   cpu=platform.processor() or platform.machine(),
                   gpu=torch.cuda.get_device_name() if device.type == "cuda" else None)
    print(f"peak memory: {results['peak_memory_mb']:.0f} MiB")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
