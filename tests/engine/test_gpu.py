"""GPU checks, marked ``gpu``: ``pytest -m gpu`` (or ``python benchmarks/gpu_check.py``, which runs them first).

Every test here skips with a reason where torch sees no CUDA GPU, so CI stays CPU-only; the DDP test also
needs two GPUs. Runs go through the CLI on the generated ``synthetic`` data set (3 x 16 x 16 images, so
crop, flip and channels_last all do something) with the smoke recipe cut to 2 + 1 epochs: seconds each on
a GPU, except ``--compile``, whose first compilation takes tens of seconds.

What "exact" can mean for a resumed run on CUDA:

- with ``torch.use_deterministic_algorithms(True)`` and ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` (set before
  cuBLAS starts), cuDNN and cuBLAS pick deterministic kernels and a run killed and resumed from its
  checkpoint (model, optimizer, every RNG, the CUDA generator of the batched augmentation) gives
  bit-identical metrics and epoch log to an uninterrupted run: the checkpointed state is complete;
- without it (the default, faster), some kernels (e.g. cuDNN's convolution backward) accumulate with
  atomics in an order that changes from run to run, so two uninterrupted runs already differ in the last
  bits, and a resumed run can only equal an uninterrupted one within a tolerance: the epochs before the
  interruption are the same run (identical lines) up to that noise, the final accuracy lands within
  ACC_TOLERANCE points.

The same ``seed`` does not give the same numbers on CPU and CUDA: the CUDA generator is a different
random stream (Philox), and kernels round differently. What must agree across devices is the arithmetic
for the same random draws: the on-device data test feeds both paths one CPU generator and compares.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers import invoke, write_fault_plugin

CUDA = torch.cuda.is_available()
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not CUDA, reason="no CUDA GPU visible to torch: the gpu-marked checks run only on a GPU "
                                        "machine (python benchmarks/gpu_check.py)"),
]

RUN = ["--dataset", "synthetic", "--recipe", "smoke", "--epochs", "2", "--stage2-epochs", "1", "--device", "cuda",
       "-q"]
ACC_TOLERANCE = 12.0  # points (see the module docstring and tests/engine/test_ddp.py)
NUMBERS = ("acc", "ece", "nll", "many_acc", "medium_acc", "few_acc")
EPOCH_FIELDS = ("stage", "epoch", "loss", "train_acc", "lr", "images")


def invoke_ok(*args):
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    return result


def run_files(out: Path, name: str) -> tuple[dict, dict, list[dict]]:
    run = out / "runs" / name
    log = [json.loads(line) for line in (run / "epochs.jsonl").read_text().splitlines()]
    return json.loads((run / "config.json").read_text()), json.loads((run / "metrics.json").read_text()), log


# data on the device ---------------------------------------------------------------------------------
def _loaders():
    from ltbench.data import ArraySplit, Augment
    from ltbench.data.loaders import TensorLoader

    rng = np.random.RandomState(0)
    split = ArraySplit(rng.randint(0, 256, (96, 16, 16, 3), dtype=np.uint8), np.repeat(np.arange(4), 24)[::-1].copy())
    args = (4, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), Augment(pad=2, flip=True))
    return split, TensorLoader(split, *args, torch.device("cpu")), TensorLoader(split, *args, torch.device("cuda"))


@pytest.mark.parametrize("sampler", ["instance", "class-balanced"])
def test_on_device_batches_equal_the_cpu_path_for_the_same_draws(sampler):
    """One CPU generator seeded alike: the CUDA loader samples, crops, flips and normalises exactly as the CPU one."""
    from ltbench.data.augment import random_crop_flip

    _, cpu, gpu = _loaders()
    assert gpu.images.device.type == "cuda" and gpu.images.dtype == torch.uint8  # uint8 on the device
    cpu_batches = list(cpu.epoch(sampler, torch.Generator().manual_seed(3), 32))
    gpu_batches = list(gpu.epoch(sampler, torch.Generator().manual_seed(3), 32))
    assert len(cpu_batches) == len(gpu_batches) == 3
    for a, b in zip(cpu_batches, gpu_batches):
        assert b["x"].device.type == "cuda" and b["x"].dtype == torch.float32 and b["x"].shape == (32, 3, 16, 16)
        assert b["x"].is_contiguous(memory_format=torch.channels_last)
        assert torch.equal(a["idx"], b["idx"].cpu()) and torch.equal(a["y"], b["y"].cpu())
        torch.testing.assert_close(b["x"].cpu(), a["x"], rtol=0, atol=1e-6)
    # the uint8 crop + flip itself is bit-exact
    images = cpu.images[:32]
    out_cpu = random_crop_flip(images, cpu.augment, torch.Generator().manual_seed(5))
    out_gpu = random_crop_flip(images.cuda(), gpu.augment, torch.Generator().manual_seed(5))
    assert torch.equal(out_cpu, out_gpu.cpu())


def test_cuda_generator_augmentation_is_deterministic_and_valid():
    """What the runner uses (a CUDA generator): same seed, same batches; every image a crop (+ flip) of its source."""
    from ltbench.data.augment import random_crop_flip

    _, _, gpu = _loaders()
    first = list(gpu.epoch("instance", torch.Generator(device="cuda").manual_seed(7), 32))
    again = list(gpu.epoch("instance", torch.Generator(device="cuda").manual_seed(7), 32))
    for a, b in zip(first, again):
        assert torch.equal(a["idx"], b["idx"]) and torch.equal(a["x"], b["x"])
    assert sorted(torch.cat([b["idx"] for b in first]).tolist()) == list(range(96))  # a permutation
    source = gpu.images[:16]
    out = random_crop_flip(source, gpu.augment, torch.Generator(device="cuda").manual_seed(1))
    assert out.shape == source.shape and out.dtype == torch.uint8 and out.device.type == "cuda"
    padded = torch.nn.functional.pad(source, (2, 2, 2, 2)).cpu()
    for image, pad in zip(out.cpu(), padded):
        crops = [pad[:, dy:dy + 16, dx:dx + 16] for dy in range(5) for dx in range(5)]
        assert any(torch.equal(image, c) or torch.equal(image, c.flip(2)) for c in crops)


# precision and memory format --------------------------------------------------------------------------
def test_bf16_autocast_run(tmp_path):
    from ltbench.engine.precision import autocast

    conv = torch.nn.Conv2d(3, 8, 3).cuda()
    with autocast(torch.device("cuda"), "bf16"):
        assert conv(torch.randn(2, 3, 8, 8, device="cuda")).dtype == torch.bfloat16  # autocast is on
    invoke_ok("run", "--method", "crt", *RUN, "--precision", "bf16", "--results", tmp_path, "--run-name", "bf16")
    config, metrics, log = run_files(tmp_path, "bf16")
    assert config["precision"] == "bf16" and config["device"].startswith("cuda")
    assert all(math.isfinite(e["loss"]) for e in log) and len(log) == 3
    assert math.isfinite(metrics["nll"]) and 0 <= metrics["acc"] <= 100


def test_fp16_run_steps_through_a_grad_scaler(tmp_path, monkeypatch):
    steps, scalers = [], []

    class CountingScaler(torch.amp.GradScaler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            scalers.append(self)

        def step(self, optimizer, *args, **kwargs):
            steps.append(1)
            return super().step(optimizer, *args, **kwargs)

    monkeypatch.setattr(torch.amp, "GradScaler", CountingScaler)
    invoke_ok("run", "--method", "crt", *RUN, "--precision", "fp16", "--results", tmp_path, "--run-name", "fp16")
    config, metrics, log = run_files(tmp_path, "fp16")
    assert config["precision"] == "fp16"
    batch = 32  # the smoke recipe's
    assert len(steps) == sum(-(-e["images"] // batch) for e in log) > 0  # every optimizer step went through it
    assert len(scalers) == 2 and all(0 < s.get_scale() < float("inf") for s in scalers)  # one per trained stage
    assert all(math.isfinite(e["loss"]) for e in log) and math.isfinite(metrics["nll"])


def test_model_and_batches_are_channels_last(tmp_path):
    from ltbench.config import RunConfig
    from ltbench.engine.progress import Reporter
    from ltbench.engine.precision import autocast
    from ltbench.engine.runner import build_trainer, plan_run

    plan = plan_run(RunConfig(method="ce", dataset="synthetic", recipe="smoke", device="cuda", precision="bf16",
                              out=str(tmp_path)))
    trainer = build_trainer(plan, Reporter(quiet=True))
    convs = [m for m in trainer.model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)
    batch = next(trainer.loaders["train"].epoch("instance", torch.Generator(device="cuda").manual_seed(0), 32))
    assert batch["x"].is_cuda and batch["x"].is_contiguous(memory_format=torch.channels_last)
    model = trainer.model.train()
    with autocast(plan.device, "bf16"):
        loss = torch.nn.functional.cross_entropy(model(batch["x"]).logits.float(), batch["y"])
    loss.backward()
    assert math.isfinite(loss.item())
    assert all(c.weight.grad is not None and c.weight.grad.is_contiguous(memory_format=torch.channels_last)
               for c in convs)


def test_compiled_run_trains_like_the_eager_run(tmp_path):
    """--compile (torch.compile of the forward pass): the same run in fp32, first-epoch loss within 2 %."""
    common = ["--method", "ce", *RUN, "--precision", "fp32", "--epochs", "1", "--results", tmp_path]
    invoke_ok("run", *common, "--run-name", "eager")
    invoke_ok("run", *common, "--compile", "--run-name", "compiled")
    (_, eager, eager_log), (config, compiled, compiled_log) = run_files(tmp_path, "eager"), run_files(tmp_path, "compiled")
    assert config["compile"] is True
    assert compiled_log[0]["images"] == eager_log[0]["images"]
    assert compiled_log[0]["loss"] == pytest.approx(eager_log[0]["loss"], rel=0.02)
    assert abs(compiled["acc"] - eager["acc"]) <= ACC_TOLERANCE


# exact resume ---------------------------------------------------------------------------------------
# `ltbench` with deterministic algorithms switched on first when $LTBENCH_TEST_DETERMINISTIC=1 (warn_only: an
# op without a deterministic kernel warns on stderr instead of stopping the run; the comparison then says so)
BOOT = ("import os, sys, torch\n"
        "if os.environ.get('LTBENCH_TEST_DETERMINISTIC') == '1':\n"
        "    torch.use_deterministic_algorithms(True, warn_only=True)\n"
        "from ltbench.cli import main\n"
        "sys.argv = ['ltbench', *sys.argv[1:]]\n"
        "main()\n")


def ltbench(*args, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BOOT, *map(str, args)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **env})


@pytest.mark.parametrize("deterministic", [True, False], ids=["deterministic", "default"])
def test_killed_run_resumes_on_cuda(tmp_path, deterministic):
    plugins = tmp_path / "plugins"
    write_fault_plugin(plugins / "kill.py", "crt-kill", "crt", env="LTBENCH_TEST_KILL_AT", own_stage1="ce-kill")
    env = {"LTBENCH_TEST_DETERMINISTIC": "1" if deterministic else "0"}
    if deterministic:
        env["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"
    common = ["run", "--method", "crt-kill", "--plugins", plugins, *RUN, "--precision", "fp32"]
    ref_out, cut_out = tmp_path / "ref", tmp_path / "cut"  # apart: the killed run must not reuse ref's stage 1
    reference = ltbench(*common, "--results", ref_out, "--run-name", "ref", env=env)
    assert reference.returncode == 0, reference.stderr
    killed = ltbench(*common, "--results", cut_out, "--run-name", "cut", env={**env, "LTBENCH_TEST_KILL_AT": "kill:0:1:3"})
    assert killed.returncode == -9, killed.stderr  # SIGKILL in stage 1, epoch 2, step 4: no chance to save
    resumed = ltbench("run", "--results", cut_out, "--run-name", "cut", "--resume", "--device", "cuda", "-q", env=env)
    assert resumed.returncode == 0, resumed.stderr
    (_, ref, ref_log), (_, cut, cut_log) = run_files(ref_out, "ref"), run_files(cut_out, "cut")
    assert cut["resumed_from"]["epoch"] == 1 and len(cut_log) == len(ref_log) == 3
    warnings = [line for line in (reference.stderr + resumed.stderr).splitlines() if "deterministic" in line]
    rows = lambda log: [[e[f] for f in EPOCH_FIELDS] for e in log]  # noqa: E731
    if deterministic:
        assert rows(cut_log) == rows(ref_log), warnings
        assert {k: cut[k] for k in NUMBERS} == {k: ref[k] for k in NUMBERS}, warnings
    else:
        assert rows(cut_log)[0][:2] == rows(ref_log)[0][:2]
        assert cut_log[0]["loss"] == pytest.approx(ref_log[0]["loss"], rel=1e-3)  # epoch 1: before the kill
        assert abs(cut["acc"] - ref["acc"]) <= ACC_TOLERANCE


# several GPUs ---------------------------------------------------------------------------------------
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason=f"DDP with NCCL needs 2+ GPUs; "
                    f"{torch.cuda.device_count()} visible")
def test_ddp_with_nccl_on_two_gpus(tmp_path):
    args = ["run", "--method", "crt", *RUN, "--precision", "fp32", "--results", tmp_path]
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                           "-m", "ltbench", *map(str, args), "--run-name", "two"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    invoke_ok(*args, "--run-name", "one")
    (config, two, log_two), (_, one, log_one) = run_files(tmp_path, "two"), run_files(tmp_path, "one")
    assert config["world_size"] == two["world_size"] == 2 and config["device"].startswith("cuda")
    assert [e["images"] for e in log_two] == [e["images"] for e in log_one]  # the ranks together saw every image
    assert abs(one["acc"] - two["acc"]) <= ACC_TOLERANCE
