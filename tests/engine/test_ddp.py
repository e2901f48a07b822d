"""Multi-process training (DistributedDataParallel, gloo on CPU) against one-process runs.

What can be exact and what cannot:

- one training step: DDP + GlobalBatchNorm2d on two half batches gives the one-process gradient and BN
  statistics up to float rounding (checked to 1e-4 relative);
- a stage with frozen features (cRT's classifier stage, BN in eval mode): the ranks see exactly the images
  and augmentations of a one-process run, and the per-rank losses are weighted so the averaged gradient
  is the global batch's; the run must match to rounding (same accuracy, NLL within 1e-4);
- a stage that trains the backbone from scratch: float rounding differs (conv kernels on 16- instead of
  32-image batches, 1 thread instead of 2, all-reduce order) and early training on digits-lt amplifies
  it: the SAME one-process run with 1 instead of 2 threads already moves the final accuracy by ~4 points,
  and seeds move it by up to ~30 (smoke recipe, 2 + 1 epochs). So the full two-process run only has to
  land within ACC_TOLERANCE points of the one-process run (and must finish, with every file once);
- a DDP run stopped by SIGTERM and resumed with the same number of processes reproduces the uninterrupted
  DDP run bit-exactly (same arithmetic, same order).
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import invoke, read_run, write_fault_plugin

ARGS = ["--method", "crt", "--dataset", "digits-lt", "--recipe", "smoke", "--precision", "fp32", "--device", "cpu",
        "--epochs", "2", "--stage2-epochs", "1", "-q"]
ACC_TOLERANCE = 12.0  # points; see the module docstring
NUMBERS = ("acc", "ece", "nll", "many_acc", "medium_acc", "few_acc")


def epoch_log(out: Path, name: str) -> list[dict]:
    return [json.loads(line) for line in (out / "runs" / name / "epochs.jsonl").read_text().splitlines()]


def ltbench(*args, env=None, timeout=240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ltbench", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("single")
    result = invoke("run", *ARGS, "--results", out, "--run-name", "one")
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def torchrun_full(tmp_path_factory) -> Path:
    """The documented launcher: torchrun --nproc_per_node=2 -m ltbench run ..."""
    out = tmp_path_factory.mktemp("ddp")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                           "-m", "ltbench", "run", *ARGS, "--results", str(out), "--run-name", "two"],
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    return out


def _one_step(rank: int, world: int, init_file: str, result_file: str) -> None:
    import torch.nn.functional as F

    from ltbench.engine.distributed import sync_batchnorm
    from ltbench.models import build_model

    torch.set_num_threads(1)
    if world > 1:
        torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.manual_seed(0)
    model = build_model("resnet32", 10, 1).to(memory_format=torch.channels_last)
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(30, 1, 8, 8, generator=generator).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (30,), generator=generator)
    x, y = x[rank::world][: 15 - rank], y[rank::world][: 15 - rank]  # 15 + 14 images: uneven on purpose
    n_global = 29 if world > 1 else len(y)
    if world > 1:
        sync_batchnorm(model, torch.device("cpu"))
        model = torch.nn.parallel.DistributedDataParallel(model)
    loss = F.cross_entropy(model(x).logits, y) * (len(y) * world / n_global)  # the loop's weighting
    loss.backward()
    if rank == 0:
        module = model.module if world > 1 else model
        torch.save({"grads": {n: p.grad for n, p in module.named_parameters()},
                    "buffers": dict(module.named_buffers())}, result_file)
    if world > 1:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def test_one_ddp_step_equals_one_process_step(tmp_path):
    """Two ranks with uneven halves of a batch: the gradient and BN statistics of the whole batch."""
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    init, result = str(tmp_path / "init"), str(tmp_path / "two.pt")
    procs = [ctx.Process(target=_one_step, args=(rank, 2, init, result)) for rank in range(2)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=120)
    assert all(proc.exitcode == 0 for proc in procs)
    two = torch.load(result, weights_only=True)

    # the one-process reference: the same 29 images in one batch
    import torch.nn.functional as F

    from ltbench.models import build_model

    torch.manual_seed(0)
    model = build_model("resnet32", 10, 1).to(memory_format=torch.channels_last)
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(30, 1, 8, 8, generator=generator).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (30,), generator=generator)
    keep = torch.cat([torch.arange(0, 30, 2)[:15], torch.arange(1, 30, 2)[:14]])
    F.cross_entropy(model(x[keep]).logits, y[keep]).backward()
    for name, param in model.named_parameters():
        scale = param.grad.abs().max().clamp_min(1e-12)
        assert (param.grad - two["grads"][name]).abs().max() / scale < 1e-4, name
    for name, buffer in model.named_buffers():
        assert torch.allclose(buffer.float(), two["buffers"][name].float(), rtol=1e-4, atol=1e-6), name


def test_torchrun_two_processes_finish_and_land_near_one_process(single, torchrun_full):
    one, two = read_run(single, "one"), read_run(torchrun_full, "two")
    assert two["world_size"] == 2 and two["num_test"] == one["num_test"] == 300
    config = json.loads((torchrun_full / "runs" / "two" / "config.json").read_text())
    assert config["world_size"] == 2 and config["stages"][0]["optim"]["batch_size"] == 32  # the global batch
    log = epoch_log(torchrun_full, "two")
    # 15 whole global batches of 32 (483 // 32: the short last batch is dropped, as in the references)
    assert [(e["stage_index"], e["epoch"], e["images"]) for e in log] == [(0, 1, 480), (0, 2, 480), (1, 1, 480)]
    for stage_one, stage_two in zip(one["stages"], two["stages"]):
        assert abs(stage_one["metrics"]["acc"] - stage_two["metrics"]["acc"]) <= ACC_TOLERANCE, stage_one["name"]
    assert abs(one["acc"] - two["acc"]) <= ACC_TOLERANCE
    assert not list((torchrun_full / "runs" / "two").glob(".*.tmp"))  # rank 0 alone wrote, atomically


def test_nproc_classifier_stage_matches_one_process(single, tmp_path):
    """`--nproc 2` on cRT's stage 2 (frozen features) with the one-process run's stage-1 artifact."""
    key = read_run(single, "one")["stages"][0]["key"]
    out = tmp_path / "results"
    shutil.copytree(single / "stages" / key, out / "stages" / key)
    proc = ltbench("run", *ARGS, "--results", out, "--run-name", "two", "--nproc", "2")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    one, two = read_run(single, "one"), read_run(out, "two")
    assert two["world_size"] == 2 and two["stages"][0]["reused"] and not two["stages"][1]["reused"]
    assert abs(one["acc"] - two["acc"]) < 0.34  # at most one of the 300 test images may flip
    assert abs(one["nll"] - two["nll"]) < 1e-4 and abs(one["ece"] - two["ece"]) < 1e-2
    (line_one,), (line_two,) = epoch_log(single, "one")[2:], epoch_log(out, "two")
    assert line_one["images"] == line_two["images"] == 480 and line_one["train_acc"] == line_two["train_acc"]
    assert line_one["loss"] == pytest.approx(line_two["loss"], rel=1e-5)


def test_ddp_run_stopped_by_sigterm_resumes_bit_exactly(tmp_path):
    plugins = tmp_path / "plugins"
    write_fault_plugin(plugins / "sigterm.py", "crt-sigterm", "crt", env="LTBENCH_TEST_TERM_AT")
    uninterrupted = tmp_path / "reference"  # the same method never stopped (its own folder: nothing reused)
    reference_run = ltbench("run", *ARGS, "--method", "crt-sigterm", "--plugins", plugins, "--results", uninterrupted,
                            "--run-name", "two", "--nproc", "2", "-q")
    assert reference_run.returncode == 0, reference_run.stderr
    out = tmp_path / "results"
    common = ["run", *ARGS, "--method", "crt-sigterm", "--plugins", plugins, "--results", out, "--run-name", "t"]
    stopped = ltbench(*common, "--nproc", "2", env={"LTBENCH_TEST_TERM_AT": "term:0:1:4"})
    assert stopped.returncode == 143, stopped.stderr
    lines = [line for line in stopped.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "after step 5" in lines[0] and "--resume --nproc 2" in lines[0]  # printed by rank 0 only
    saved = torch.load(out / "runs" / "t" / "checkpoints" / "last.pt", weights_only=True)
    assert (saved["stage_index"], saved["epoch"], saved["step"], saved["world_size"]) == (0, 1, 5, 2)
    resumed = ltbench("run", "--results", out, "--run-name", "t", "--resume", "--nproc", "2", "-q")
    assert resumed.returncode == 0, resumed.stderr
    reference, result = read_run(uninterrupted, "two"), read_run(out, "t")
    for key in NUMBERS:
        assert reference[key] == result[key], key
    for stage_a, stage_b in zip(reference["stages"], result["stages"]):
        assert stage_a["metrics"] == stage_b["metrics"]
    fields = ("stage_index", "epoch", "loss", "train_acc", "images")
    assert [[e[f] for f in fields] for e in epoch_log(uninterrupted, "two")] == \
        [[e[f] for f in fields] for e in epoch_log(out, "t")]


@pytest.mark.parametrize("codes, expected", [
    ([-15, 143], 143),  # rank 1 stopped on SIGTERM; torchrun then killed rank 0 while it was leaving
    ([1, 130], 130),    # rank 0 failed in a collective because rank 1 left on Ctrl-C
    ([1, -15], 1),      # rank 0 failed; torchrun killed rank 1: the failure, not the kill
    ([-9], 137),        # killed (e.g. out of memory), as a shell reports it
    ([2, 3], 2),
])
def test_nproc_exit_code_prefers_an_interrupt_then_a_returned_code(codes, expected):
    from ltbench.engine.launch import _exit_code

    assert _exit_code(codes) == expected
