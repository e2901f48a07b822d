"""Reliability: exact resume after SIGKILL / SIGTERM, checkpoint fallback, NaN, stage locks, concurrent runs.

Faults are injected by a test-only method plugin (written to a tmp folder, passed with --plugins): cRT
whose loss kills the process, sends it SIGTERM or turns NaN at the STAGE:EPOCH:STEP named by
$LTBENCH_TEST_FAULT. Unset, it is plain cRT; so the uninterrupted reference run is the same method.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from ltbench.engine import checkpoint as ckpt
from ltbench.engine.locks import StageLock
from tests.helpers import FAST, invoke, read_run, write_fault_plugin

FAULT_ENV = "LTBENCH_TEST_FAULT"
NUMBERS = ("acc", "ece", "nll", "wrong_confidence", "mean_confidence", "balanced_acc", "many_acc", "medium_acc",
           "few_acc", "feature_compactness")
EPOCH_FIELDS = ("stage", "stage_index", "epoch", "loss", "train_acc", "lr", "images")


def run_subprocess(*args, fault: str | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    env = {**os.environ, FAULT_ENV: fault or ""}
    return subprocess.run([sys.executable, "-m", "ltbench", "run", *map(str, args)], env=env, capture_output=True,
                          text=True, timeout=timeout)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


def epoch_log(out: Path, name: str) -> list[tuple]:
    lines = (out / "runs" / name / "epochs.jsonl").read_text().splitlines()
    return [tuple(json.loads(line)[k] for k in EPOCH_FIELDS) for line in lines]


def assert_same_results(out: Path, name: str, reference: tuple[Path, str]) -> None:
    """Bit-exact: every metric of the run and of each stage, the test logits and the epoch log."""
    ref_out, ref_name = reference
    a, b = read_run(ref_out, ref_name), read_run(out, name)
    for key in NUMBERS:
        assert a[key] == b[key], key
    assert len(a["stages"]) == len(b["stages"])
    for stage_a, stage_b in zip(a["stages"], b["stages"]):
        for key in NUMBERS:
            assert stage_a["metrics"][key] == stage_b["metrics"][key], (stage_a["name"], key)
    logits_a = np.load(ref_out / "runs" / ref_name / "test_logits.npz")["logits"]
    logits_b = np.load(out / "runs" / name / "test_logits.npz")["logits"]
    assert np.array_equal(logits_a, logits_b)
    trained_here = {i for i, stage in enumerate(b["stages"]) if not stage["reused"]}  # a reused stage logs nothing
    expected = [line for line in epoch_log(ref_out, ref_name) if line[1] in trained_here]
    assert epoch_log(out, name) == expected  # no duplicate or missing lines


@pytest.fixture(scope="module")
def plugins(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("plugins")
    write_fault_plugin(folder / "fault.py", "crt-fault", "crt", env=FAULT_ENV)
    return folder


@pytest.fixture(scope="module")
def reference(plugins, tmp_path_factory) -> tuple[Path, str]:
    """The uninterrupted run every resumed run must reproduce exactly."""
    out = tmp_path_factory.mktemp("reference")
    result = invoke("run", "--method", "crt-fault", "--plugins", plugins, *FAST, "--results", out, "--run-name", "ref")
    assert result.exit_code == 0, result.output
    return out, "ref"


# SIGKILL / SIGTERM, then --resume -------------------------------------------------------------------
@pytest.mark.parametrize("fault,stage1_cached", [
    ("kill:0:1:5", False),  # mid-epoch 2 of stage 1 (one epoch checkpointed)
    ("kill:1:1:2", True),  # mid-epoch 2 of stage 2; stage 1 came from the cache and must resume as reused
])
def test_sigkilled_run_resumes_bit_exactly(plugins, reference, tmp_path, fault, stage1_cached):
    out = tmp_path / "results"
    if stage1_cached:
        key = read_run(*reference)["stages"][0]["key"]
        shutil.copytree(reference[0] / "stages" / key, out / "stages" / key)
    killed = run_subprocess("--method", "crt-fault", "--plugins", plugins, *FAST, "--results", out, "--run-name", "r",
                            fault=fault)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    run = out / "runs" / "r"
    assert not (run / "metrics.json").exists() and (run / "checkpoints" / "last.pt").is_file()
    resumed = invoke("run", "--results", out, "--run-name", "r", "--resume", "-q")  # settings from config.json
    assert resumed.exit_code == 0, resumed.output
    assert_same_results(out, "r", reference)
    metrics = read_run(out, "r")
    assert metrics["resumed_from"]["stage"] == int(fault.split(":")[1]) + 1
    first = metrics["stages"][0]
    assert (first["reused"], first["trained_by"]) == ((True, "ref") if stage1_cached else (False, "r"))
    assert not (run / "checkpoints").exists()  # a finished run keeps model.pt, not its checkpoints
    assert not list((out / "stages").glob("*.lock"))


def test_sigterm_saves_a_mid_epoch_checkpoint_and_resumes_bit_exactly(plugins, reference, tmp_path):
    out = tmp_path / "results"
    stopped = run_subprocess("--method", "crt-fault", "--plugins", plugins, *FAST, "--results", out, "--run-name", "t",
                             fault="term:0:1:5")
    assert stopped.returncode == 128 + signal.SIGTERM
    lines = error_lines(stopped.stderr)
    assert len(lines) == 1 and "Traceback" not in stopped.stderr, stopped.stderr
    assert lines[0].startswith("error: stopped by SIGTERM in stage 1 (representation), epoch 2, after step 6")
    assert f"ltbench run --results {out} --run-name t --resume" in lines[0]
    saved = torch.load(out / "runs" / "t" / "checkpoints" / "last.pt", weights_only=True)
    assert (saved["stage_index"], saved["epoch"], saved["step"]) == (0, 1, 6)  # the step that ran is kept
    resumed = invoke("run", "--results", out, "--run-name", "t", "--resume", "-q")
    assert resumed.exit_code == 0, resumed.output
    assert_same_results(out, "t", reference)


def test_truncated_checkpoint_falls_back_to_the_previous_one(plugins, reference, tmp_path):
    out = tmp_path / "results"
    killed = run_subprocess("--method", "crt-fault", "--plugins", plugins, *FAST, "--results", out, "--run-name", "c",
                            fault="kill:0:2:1")  # two epochs done: last.pt and prev.pt
    assert killed.returncode == -signal.SIGKILL
    folder = out / "runs" / "c" / "checkpoints"
    both_bad = tmp_path / "both-bad"
    shutil.copytree(out, both_bad)

    last = folder / "last.pt"
    with open(last, "r+b") as f:
        f.truncate(last.stat().st_size // 3)
    resumed = invoke("run", "--results", out, "--run-name", "c", "--resume", "-q")
    assert resumed.exit_code == 0, resumed.output
    warning = error_lines(resumed.stderr)
    assert len(warning) == 1 and warning[0].startswith("warning:") and "last.pt is truncated or corrupt" in warning[0]
    assert "prev.pt" in warning[0]
    assert read_run(out, "c")["resumed_from"] == {"checkpoint": "prev.pt", "stage": 1, "epoch": 1, "step": 0}
    assert_same_results(out, "c", reference)

    bad_folder = both_bad / "runs" / "c" / "checkpoints"
    (bad_folder / "last.pt").write_bytes(b"PK\x03\x04 not a checkpoint")
    (bad_folder / "prev.pt").write_bytes((bad_folder / "prev.pt").read_bytes()[:1000])
    before = {p.name: p.read_bytes() for p in bad_folder.iterdir()}
    refused = invoke("run", "--results", both_bad, "--run-name", "c", "--resume", "-q")
    assert refused.exit_code != 0
    lines = error_lines(refused.stderr)
    assert len(lines) == 1 and "Traceback" not in refused.output
    assert "no readable checkpoint" in lines[0] and "last.pt" in lines[0] and "prev.pt" in lines[0]
    assert {p.name: p.read_bytes() for p in bad_folder.iterdir()} == before  # nothing deleted or rewritten


def test_crash_between_the_two_renames_keeps_a_complete_checkpoint(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    ckpt.save_checkpoint(run_dir, {"stage_index": 0, "epoch": 1, "weights": torch.arange(3)})
    ckpt.save_checkpoint(run_dir, {"stage_index": 0, "epoch": 2, "weights": torch.arange(4)})
    real_replace, calls = os.replace, []

    def dies_after_first_rename(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise KeyboardInterrupt  # stands for SIGKILL after last.pt became prev.pt
        real_replace(src, dst)

    monkeypatch.setattr(ckpt.os, "replace", dies_after_first_rename)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save_checkpoint(run_dir, {"stage_index": 0, "epoch": 3})
    monkeypatch.setattr(ckpt.os, "replace", real_replace)
    assert not (run_dir / "checkpoints" / "last.pt").exists()
    state, path = ckpt.load_checkpoint(run_dir, "cpu", warn=lambda message: None)
    assert path.name == "prev.pt" and state["epoch"] == 2 and torch.equal(state["weights"], torch.arange(4))
    assert not list((run_dir / "checkpoints").glob(".*.tmp"))


def test_rng_state_round_trips_through_a_weights_only_load(tmp_path):
    import random

    generator = torch.Generator().manual_seed(3)
    torch.manual_seed(1), np.random.seed(2), random.seed(4)
    torch.rand(5), np.random.rand(5), random.random(), torch.rand(5, generator=generator), np.random.randn()
    ckpt.save_state(tmp_path / "rng.pt", {"rng": ckpt.capture_rng(generator)})
    expected = (torch.rand(5), np.random.rand(5), random.random(), np.random.randn(), torch.rand(5, generator=generator))
    torch.manual_seed(99), np.random.seed(99), random.seed(99), generator.manual_seed(99)
    ckpt.restore_rng(torch.load(tmp_path / "rng.pt", weights_only=True)["rng"], generator)
    again = (torch.rand(5), np.random.rand(5), random.random(), np.random.randn(), torch.rand(5, generator=generator))
    assert torch.equal(expected[0], again[0]) and np.array_equal(expected[1], again[1])
    assert expected[2] == again[2] and expected[3] == again[3] and torch.equal(expected[4], again[4])


# NaN ------------------------------------------------------------------------------------------------
def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(plugins, tmp_path, monkeypatch):
    monkeypatch.setenv(FAULT_ENV, "nan:0:1:3")
    result = invoke("run", "--method", "crt-fault", "--plugins", plugins, *FAST, "--results", tmp_path, "--run-name", "n")
    assert result.exit_code == 3
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and "Traceback" not in result.output
    assert "loss became nan" in lines[0] and "epoch 2, step 4" in lines[0] and "last good checkpoint is kept" in lines[0]
    run = tmp_path / "runs" / "n"
    assert not (run / "metrics.json").exists()
    state, path = ckpt.load_checkpoint(run, "cpu")
    assert path.name == "last.pt" and (state["stage_index"], state["epoch"], state["step"]) == (0, 1, 0)
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    assert len((run / "epochs.jsonl").read_text().splitlines()) == 1
    assert not list((tmp_path / "stages").glob("*.lock"))  # the stage lock was released


def test_out_of_memory_names_the_batch_size_and_a_smaller_one(plugins, tmp_path, monkeypatch):
    monkeypatch.setenv(FAULT_ENV, "oom:1:0:2")
    result = invoke("run", "--method", "crt-fault", "--plugins", plugins, *FAST, "--batch-size", "64",
                    "--results", tmp_path, "--run-name", "oom")
    assert result.exit_code != 0 and "Traceback" not in result.output
    lines = error_lines(result.stderr)
    assert len(lines) == 1, result.stderr
    assert "out of CPU memory in stage 2 (classifier) at batch size 64" in lines[0]
    assert "try --batch-size 32" in lines[0]
    assert not list((tmp_path / "stages").glob("*.lock"))


# stage artifacts and locks --------------------------------------------------------------------------
def test_corrupt_stage_artifact_is_reported_and_retrained(plugins, reference, tmp_path):
    out = tmp_path / "results"
    shutil.copytree(reference[0] / "stages", out / "stages")
    key = read_run(*reference)["stages"][0]["key"]
    model = out / "stages" / key / "model.pt"
    model.write_bytes(model.read_bytes()[:5000])
    result = invoke("run", "--method", "crt-fault", "--plugins", plugins, *FAST, "--results", out, "--run-name", "ce")
    assert result.exit_code == 0, result.output
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and lines[0].startswith("warning: stage artifact") and str(model) in lines[0]
    assert "retraining stage 1" in lines[0]
    first = read_run(out, "ce")["stages"][0]
    assert first["reused"] is False and first["metrics"] == read_run(*reference)["stages"][0]["metrics"]
    torch.load(model, weights_only=True)  # replaced by a complete artifact


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_stale_lock_rules(tmp_path):
    path = tmp_path / "k.lock"
    holder = StageLock(path, owner="holder")
    assert holder.try_acquire() and path.exists()
    waiter = StageLock(path, owner="waiter", stale_s=60)
    assert not waiter.try_acquire()
    raw, info, age = waiter.read()
    assert info["run"] == "holder" and info["pid"] == os.getpid()
    assert waiter.stale_reason(info, age) is None  # alive and fresh: wait
    holder.release()
    assert not path.exists()

    path.write_text(json.dumps({**info, "pid": _dead_pid(), "nonce": "x"}))  # killed on this host
    raw, info, age = waiter.read()
    assert "is gone" in waiter.stale_reason(info, age)
    other = path.read_bytes()
    path.write_text(json.dumps({**info, "nonce": "fresh"}))  # someone else took it meanwhile
    assert not waiter.break_stale(other) and path.exists()  # never removes a lock it did not judge
    assert waiter.break_stale(path.read_bytes()) and not path.exists()

    path.write_text(json.dumps({"pid": 1, "host": "elsewhere", "run": "remote", "time": time.time()}))
    old = time.time() - 120
    os.utime(path, (old, old))
    raw, info, age = waiter.read()
    assert "no heartbeat" in waiter.stale_reason(info, age)  # another host: only the heartbeat age counts
    assert waiter.break_stale(raw) and waiter.try_acquire()
    waiter.release()


def test_heartbeat_keeps_a_held_lock_fresh(tmp_path):
    path = tmp_path / "k.lock"
    holder = StageLock(path, owner="holder", stale_s=5)  # heartbeat every 0.5 s
    assert holder.try_acquire()
    old = time.time() - 100
    os.utime(path, (old, old))
    time.sleep(1.2)
    assert time.time() - path.stat().st_mtime < 2
    holder.release()


def test_a_run_waits_for_a_held_stage_lock_then_trains(tmp_path):
    """A live holder makes the run wait (and say so); once released without an artifact, it trains."""
    from ltbench.config import RunConfig
    from ltbench.engine.plan import plan_run

    out = tmp_path / "results"
    key = plan_run(RunConfig(method="ce", recipe="smoke", precision="fp32", device="cpu", out=str(out))).keys[0]
    (out / "stages").mkdir(parents=True)
    holder = StageLock(out / "stages" / f"{key}.lock", owner="someone-else")
    assert holder.try_acquire()
    proc = subprocess.Popen([sys.executable, "-m", "ltbench", "run", "--method", "ce", "--recipe", "smoke",
                             "--precision", "fp32", "--device", "cpu", "--results", str(out), "--run-name", "w"],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    try:
        seen = ""
        deadline = time.time() + 120
        while "waiting for run 'someone-else'" not in seen and time.time() < deadline:
            line = proc.stderr.readline()
            if not line and proc.poll() is not None:
                break
            seen += line
        assert "waiting for run 'someone-else'" in seen
        time.sleep(1.5)
        assert proc.poll() is None and not (out / "runs" / "w" / "metrics.json").exists()
    finally:
        holder.release()
    proc.communicate(timeout=180)
    assert proc.returncode == 0
    assert read_run(out, "w")["stages"][0]["reused"] is False


def test_two_concurrent_runs_train_the_shared_stage_once(tmp_path):
    out = tmp_path / "results"
    common = ["--recipe", "smoke", "--precision", "fp32", "--device", "cpu", "--results", str(out)]
    procs = {method: subprocess.Popen([sys.executable, "-m", "ltbench", "run", "--method", method, *common,
                                       "--run-name", method], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                      text=True)
             for method in ("ce", "crt")}
    logs = {method: proc.communicate(timeout=240)[1] for method, proc in procs.items()}
    assert all(proc.returncode == 0 for proc in procs.values()), logs
    first = {method: read_run(out, method)["stages"][0] for method in procs}
    assert first["ce"]["key"] == first["crt"]["key"]
    trainers = [method for method, stage in first.items() if not stage["reused"]]
    assert len(trainers) == 1  # exactly one of them trained stage 1 ...
    (reuser,) = set(procs) - set(trainers)
    assert first[reuser]["trained_by"] == trainers[0]  # ... and the other loaded its artifact
    assert read_run(out, reuser)["stages"][0]["metrics"] == first[trainers[0]]["metrics"]
    assert f"reused {first['ce']['key']} (trained by run '{trainers[0]}')" in logs[reuser]
    assert not list((out / "stages").glob("*.lock"))
