"""Can JPEG decoding keep a GPU fed on ImageNet-LT? Decode + RandomResizedCrop(224) + flip, images/s per core.

    python benchmarks/decode.py [--images 200] [--folder /tmp/ltbench-decode] [--out results/decode-cpu.json]
    python benchmarks/decode.py --gpu-rate --device cuda [--out results/gpu/feed.json]   # the GPU side

The first form makes ``--images`` ImageNet-sized JPEGs (500x375, quality 90) in ``--folder`` (never in the
repository), cut from the two photographs scikit-learn ships (random crops, scales, flips and brightness,
so that files differ as photographs do), and times, in ONE process with ONE thread
(``torch.set_num_threads(1)``; Pillow decodes on one thread), the per-image pipelines a DataLoader worker
runs, from the file on disk to a uint8 3x224x224 tensor:

  pil          Image.open (+ convert("RGB") unless RGB already) + pil_to_tensor, then
               v2.RandomResizedCrop(224) + flip on the uint8 tensor: ltbench's FileLoader (ltbench/data/loaders.py)
  pil-resize   Image.open + convert, v1 RandomResizedCrop + flip on the PIL image (Pillow resizes), then
               pil_to_tensor: the reference implementations' order (classifier-balancing, timm)
  tv           torchvision.io.read_file + decode_jpeg(RGB), then v2.RandomResizedCrop(224) + flip
  pil-decode, tv-decode   the decode alone

Each is timed over every image, ``--repeats`` times; the figures are images per second of this process's
CPU time (time.process_time: per core, and robust to other jobs taking the core away) and of wall-clock
time. The second form measures what the GPU side needs: training images/s of ResNet-50 and ResNeXt-50
32x4d at 224 px on one fixed in-memory batch (forward + backward + SGD, bf16 autocast where the device runs
it, channels_last): the compute limit a data path has to match; with ``--decode-json`` it divides that by
the per-core decode rate measured before, the number of cores that feeding it takes.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

# a public figure to compare against, not measured here: NVIDIA DeepLearningExamples,
# PyTorch/Classification/ConvNets/resnet50v1.5/README.md, "Training performance: NVIDIA DGX A100 (8x A100 80GB)",
# 1 GPU, mixed precision, DALI data path, pytorch-21.03 container
A100_RESNET50_AMP = 2470.0
# timm results/benchmark-train-amp-nhwc-pt112-cu113-rtx3090.csv: resnext50_32x4d 1001 img/s against resnet50 1218
RESNEXT50_OVER_RESNET50 = 1001.03 / 1218.01


def make_images(folder: Path, count: int, seed: int = 0) -> list[Path]:
    """``count`` 500x375 JPEGs (quality 90) cut from scikit-learn's sample photographs (made once)."""
    from PIL import Image, ImageEnhance
    from sklearn.datasets import load_sample_images

    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{i:04d}.jpg" for i in range(count)]
    if all(p.is_file() for p in paths):
        return paths
    photos = [Image.fromarray(image) for image in load_sample_images().images]  # 640x427 each
    rng = np.random.RandomState(seed)
    for i, path in enumerate(paths):
        photo = photos[i % len(photos)]
        scale = rng.uniform(0.55, 1.0)
        width, height = int(photo.width * scale), int(photo.width * scale * 0.75)
        height = min(height, photo.height)
        left, top = rng.randint(0, photo.width - width + 1), rng.randint(0, photo.height - height + 1)
        image = photo.crop((left, top, left + width, top + height)).resize((500, 375), Image.Resampling.LANCZOS)
        if rng.rand() < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        image = ImageEnhance.Brightness(image).enhance(rng.uniform(0.7, 1.3))
        image.save(path, quality=90)
    return paths


def pipelines(size: int = 224) -> dict:
    import warnings

    from PIL import Image
    from torchvision import io as tvio
    from torchvision import transforms as v1
    from torchvision.transforms import v2
    from torchvision.transforms.v2.functional import pil_to_tensor

    warnings.filterwarnings("ignore", message=".*image decoding and encoding capabilities of TorchVision.*")
    crop_flip = v2.Compose([v2.RandomResizedCrop(size, antialias=True), v2.RandomHorizontalFlip()])
    pil_crop_flip = v1.Compose([v1.RandomResizedCrop(size), v1.RandomHorizontalFlip()])

    def pil_decode(path):  # as ltbench/data/loaders.py decodes
        with Image.open(path) as image:
            return pil_to_tensor(image if image.mode == "RGB" else image.convert("RGB"))

    def tv_decode(path):
        return tvio.decode_jpeg(tvio.read_file(str(path)), mode=tvio.ImageReadMode.RGB)

    def pil_resize(path):
        with Image.open(path) as image:
            return pil_to_tensor(pil_crop_flip(image.convert("RGB")))

    return {"pil": lambda p: crop_flip(pil_decode(p)), "pil-resize": pil_resize,
            "tv": lambda p: crop_flip(tv_decode(p)), "pil-decode": pil_decode, "tv-decode": tv_decode}


def time_pipeline(run, paths: list[Path], repeats: int) -> dict:
    for path in paths[:10]:  # warm-up: first calls, page cache
        run(path)
    cpu_rates, wall_rates = [], []
    for _ in range(repeats):
        cpu, wall = time.process_time(), time.perf_counter()
        for path in paths:
            out = run(path)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        cpu_rates.append(len(paths) / cpu)
        wall_rates.append(len(paths) / wall)
    assert out.dtype == torch.uint8 and out.shape[0] == 3
    return {"per_cpu_second": statistics.median(cpu_rates), "per_cpu_second_best": max(cpu_rates),
            "per_wall_second": statistics.median(wall_rates), "per_wall_second_best": max(wall_rates),
            "output_shape": list(out.shape)}


def decode_main(args) -> dict:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    paths = make_images(Path(args.folder), args.images)
    sizes = [p.stat().st_size for p in paths]
    load_before = os.getloadavg()
    results = {}
    for name, run in pipelines().items():
        results[name] = time_pipeline(run, paths, args.repeats)
        r = results[name]
        print(f"{name:11s} {r['per_cpu_second']:7.1f} img/s per CPU-second (best {r['per_cpu_second_best']:.1f}), "
              f"{r['per_wall_second']:7.1f} per wall-second")
    load_after = os.getloadavg()
    import PIL
    import torchvision

    return {"pipelines": results, "images": len(paths), "image_size": [500, 375], "jpeg_quality": 90,
            "mean_file_kb": float(np.mean(sizes) / 1024), "threads": torch.get_num_threads(),
            "load_average_before": load_before, "load_average_after": load_after, "cores": os.cpu_count(),
            "cpu": _cpu_name(), "torch": torch.__version__, "torchvision": torchvision.__version__,
            "pillow": PIL.__version__, "python": platform.python_version()}


def _cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_rate(name: str, device: torch.device, precision: str, batch: int, steps: int, size: int,
             warmup: int = 3) -> float:
    """Training images/s of a timm backbone on one fixed in-memory batch: fwd + bwd + SGD step, channels_last."""
    from torch.nn import functional as F

    from ltbench.engine.precision import autocast
    from ltbench.models import build_model

    model = build_model(name, 1000, 3).to(device).to(memory_format=torch.channels_last).train()
    x = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (batch,), device=device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)

    def step():
        with autocast(device, precision):
            loss = F.cross_entropy(model(x).logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(warmup):  # cuDNN's kernel choice, the allocator
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - start)


def gpu_main(args) -> dict:
    from ltbench.engine.precision import resolve_device, resolve_precision

    device = resolve_device(args.device)
    precision = resolve_precision(args.precision, device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest kernels
    rates = {}
    for name in ("resnet50", "resnext50_32x4d"):
        rates[name] = gpu_rate(name, device, precision, args.batch_size, args.steps, args.image_size, args.warmup)
        print(f"{name:16s} {rates[name]:8.1f} training img/s ({device.type} {precision}, batch {args.batch_size}, "
              f"{args.image_size} px, channels_last)")
    result = {"training_images_per_s": rates, "device": str(device), "precision": precision,
              "batch_size": args.batch_size, "image_size": args.image_size, "steps": args.steps,
              "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
              "torch": torch.__version__}
    if args.decode_json and Path(args.decode_json).is_file():
        decode = json.loads(Path(args.decode_json).read_text())["pipelines"]
        per_core = {k: decode[k]["per_cpu_second"] for k in ("pil", "pil-resize", "tv")}
        result["decode_per_core"] = per_core
        result["decode_from"] = str(args.decode_json)
        result["cores_to_feed"] = {model: {k: rate / v for k, v in per_core.items()} for model, rate in rates.items()}
        for model, cores in result["cores_to_feed"].items():
            print(f"feeding {model}: " + ", ".join(f"{k} {v:.1f} cores" for k, v in cores.items()))
    return result


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--folder", default="/tmp/ltbench-decode", help="where the JPEGs are made (not the repo)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--gpu-rate", action="store_true", help="measure the GPU side instead (see above)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--decode-json", default=str(Path(__file__).resolve().parents[1] / "results" /
                                                     "decode-cpu.json"))
    parser.add_argument("--out", default=None, help="write the figures as JSON here")
    args = parser.parse_args(argv)
    result = gpu_main(args) if args.gpu_rate else decode_main(args)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
