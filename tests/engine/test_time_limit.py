"""Long runs in working blocks: --time-limit stops at an epoch boundary (exit 75) and the same run continues,
from a copy of its results folder under another path, with exactly the numbers of an uninterrupted run; each
process that trained records its machine (spans); --log-test-acc logs test top-1 per epoch and changes
nothing; a submitit job is requeued as the same run, resumed.

The time limit is driven by a fake clock (``interrupt.clock``, ``interrupt.process_start``): every reading
advances it by 10 s, so where a run stops does not depend on how busy the machine is.
"""
import json
import shutil
import signal
import types

import pytest

from ltbench.config import RunConfig
from ltbench.engine import interrupt
from ltbench.engine.interrupt import TIME_LIMIT_EXIT, TimeBudget, TimeLimitReached
from ltbench.engine.run_folder import BEST_ON_TEST, resume_config
from tests.engine.test_resume import assert_same_results, error_lines
from tests.helpers import FAST, invoke, read_run, table_rows

CRT = ["--method", "crt", *FAST]


def write_suite_file(folder, text):
    path = folder / "suite.toml"
    path.write_text(text)
    return path


class FakeClock:
    """Wall clock for the time budget: each reading is 10 s after the previous one; the process started at 0."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 10.0
        return self.now


@pytest.fixture()
def fake_clock(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(interrupt, "clock", clock)
    monkeypatch.setattr(interrupt, "process_start", lambda: 0.0)
    return clock


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """crt never interrupted, without --log-test-acc."""
    out = tmp_path_factory.mktemp("reference")
    result = invoke("run", *CRT, "--results", out, "--run-name", "ref")
    assert result.exit_code == 0, result.output
    return out, "ref"


def test_a_run_stopped_by_its_time_limit_resumes_from_a_copy_elsewhere_bit_exactly(reference, tmp_path, fake_clock,
                                                                                   monkeypatch):
    block1 = tmp_path / "block1" / "results"
    old_data = tmp_path / "block1" / "data"
    old_data.mkdir(parents=True)
    # clock readings 10 s apart: epoch 1 of stage 1 ends at 40 s, epoch 2 at 70 s; then the next epoch (the stage's
    # last, so two epochs' worth: 2 x 1.25 x 10 s) would end after the 100 s limit
    stopped = invoke("run", *CRT, "--results", block1, "--run-name", "t", "--log-test-acc", "--data-root", old_data,
                     "--time-limit", "100s")
    assert stopped.exit_code == TIME_LIMIT_EXIT == 75, stopped.output
    lines = error_lines(stopped.stderr)
    assert len(lines) == 1 and "Traceback" not in stopped.output, stopped.output
    assert lines[0].startswith("error: stopped by the time limit (")
    assert "in stage 1 (representation) after epoch 2" in lines[0]
    assert lines[0].endswith(f"continue with: ltbench run --results {block1} --run-name t --resume --time-limit 1m40s")
    run = block1 / "runs" / "t"
    assert not (run / "metrics.json").exists() and (run / "checkpoints" / "last.pt").is_file()
    assert not list(run.parent.parent.rglob("*.lock"))  # nothing stays locked: the folder can be copied as it is

    # the next block: another clone, another path; the old folders are gone
    block2 = tmp_path / "elsewhere" / "clone" / "results"
    shutil.copytree(block1, block2)
    shutil.rmtree(tmp_path / "block1")
    for folder in sorted(block2.rglob("*"), reverse=True):  # as a git clone has it: no empty folders (stages/)
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    assert not (block2 / "stages").exists()
    monkeypatch.undo()  # the real clock, no time limit
    resumed_config, _ = resume_config(RunConfig(out=str(block2), run_name="t", resume=True), explicit=set())
    assert resumed_config.data_root is None  # the old data root is gone: the default one (or --data-root) instead
    assert resumed_config.test_every_epoch  # kept from config.json
    resumed = invoke("run", "--results", block2, "--run-name", "t", "--resume", "-q")
    assert resumed.exit_code == 0, resumed.output
    assert_same_results(block2, "t", reference)  # --log-test-acc and the stop changed no number

    metrics = read_run(block2, "t")
    assert metrics["resumed_from"] == {"checkpoint": "last.pt", "stage": 1, "epoch": 2, "step": 0}
    spans = metrics["spans"]
    assert [(s["first_epoch"], s["last_epoch"], s["epochs"]) for s in spans] == [
        ({"stage": 1, "epoch": 1}, {"stage": 1, "epoch": 2}, 2), ({"stage": 1, "epoch": 3}, {"stage": 2, "epoch": 2}, 3)]
    for span in spans:
        machine = span["machine"]
        assert machine["cpu"] and set(machine["cpu_flags"]) == {"avx2", "avx512f", "avx512_bf16", "amx"}
        assert machine["torch"] and machine["device"] == "cpu" and machine["torch_threads"] >= 1

    epochs = [json.loads(line) for line in (block2 / "runs" / "t" / "epochs.jsonl").read_text().splitlines()]
    assert [(e["stage_index"], e["epoch"]) for e in epochs] == [(0, 1), (0, 2), (0, 3), (1, 1), (1, 2)]
    assert all(0 <= e["test_acc"] <= 100 for e in epochs)  # logged before and after the stop
    assert epochs[-1]["test_acc"] == pytest.approx(metrics["acc"], abs=1e-9)  # the last epoch is the reported model
    best = metrics["best_epoch_on_test"]
    assert best["note"] == BEST_ON_TEST == "best on test, as the references report: a choice made on the test set"
    assert best["stage"] == 2 and best["test_acc"] == max(e["test_acc"] for e in epochs[3:])
    assert [s["best_epoch_on_test"]["epochs"] for s in metrics["stages"]] == [3, 2]
    assert [s["key"] for s in metrics["stages"]] == [s["key"] for s in read_run(*reference)["stages"]]  # not in a key

    table = invoke("table", "--results", block2, "--layout", "long", "--best-epoch")
    assert table.exit_code == 0, table.output
    assert "best ep. (on test)" in table.stdout and "a choice made on the test set" in table.stdout
    assert table_rows(table.stdout)[0][5] == f"{best['test_acc']:.2f}"
    plain = invoke("table", "--results", block2, "--layout", "long")
    assert "best ep." not in plain.stdout


def test_a_sweep_stops_every_run_at_its_time_limit_and_the_same_command_continues(tmp_path, fake_clock, monkeypatch):
    suite = write_suite_file(tmp_path, 'methods = ["ce", "crt"]\ndatasets = ["digits-lt"]\nrecipe = "smoke"\n'
                                       'precision = "fp32"\ndevice = "cpu"\n')
    results = tmp_path / "results"
    stopped = invoke("sweep", suite, "--results", results, "-q", "--time-limit", "100s")
    assert stopped.exit_code == 75, stopped.output
    lines = error_lines(stopped.stderr)
    assert lines[-1] == ("error: stopped by the time limit: 0 run(s) done, 1 stopped at an epoch boundary with a "
                         "checkpoint, 1 not started; continue with the same `ltbench sweep` command: it resumes "
                         "stopped runs and skips finished ones")
    assert any(line.startswith("stopped crt digits-lt seed 0: stopped by the time limit") for line in lines)
    assert len(list((results / "runs").iterdir())) == 1  # ce was not started
    monkeypatch.undo()
    again = invoke("sweep", suite, "--results", results, "-q")
    assert again.exit_code == 0, again.output
    assert "2 run(s) done, 0 already finished" in again.stderr
    runs = {json.loads((p / "config.json").read_text())["method"]: json.loads((p / "metrics.json").read_text())
            for p in (results / "runs").iterdir()}
    assert runs["crt"]["resumed_from"]["epoch"] == 2 and len(runs["crt"]["spans"]) == 2
    assert runs["ce"]["stages"][0]["reused"] and runs["ce"]["spans"] == []  # trained nothing itself


@pytest.mark.parametrize("args,env,words", [
    (["--time-limit", "2x"], {}, "--time-limit '2x': give a duration with units, e.g. 2h20m"),
    (["--time-limit", "90"], {}, "--time-limit '90': give a duration with units"),
    ([], {"LTBENCH_TIME_LIMIT": "soon"}, "--time-limit 'soon'"),
])
def test_a_bad_time_limit_is_one_line(tmp_path, args, env, words):
    result = invoke("run", *CRT, "--results", tmp_path / "results", *args, env=env)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert error_lines(result.stderr) == [error_lines(result.stderr)[0]] and words in result.stderr
    assert not (tmp_path / "results").exists()


def test_a_slurm_sweep_refuses_a_time_limit(tmp_path):
    suite = write_suite_file(tmp_path, 'methods = ["ce"]\nrecipe = "smoke"\nprecision = "fp32"\n')
    result = invoke("sweep", suite, "--results", tmp_path / "r", "--executor", "slurm", "--time-limit", "1h")
    assert result.exit_code == 2 and len(error_lines(result.stderr)) == 1
    assert "each job has --timeout-min and is requeued" in result.stderr


def test_a_run_does_not_start_after_its_time_limit(tmp_path):
    result = invoke("run", *CRT, "--results", tmp_path / "results", "--time-limit", "1s")  # this process is older
    assert result.exit_code == 75 and error_lines(result.stderr) == [
        error_lines(result.stderr)[0]] and "not started: the time limit" in result.stderr
    assert not (tmp_path / "results").exists()


def test_time_budget_estimates_the_next_epoch_from_the_epochs_measured(fake_clock):
    budget = TimeBudget(deadline=1000.0)
    fake_clock.now = 980.0
    assert not budget.time_up(1.0, "a")  # at 990 with nothing measured yet: the first epoch runs while time is left
    assert budget.time_up(1.0, "a")  # at 1000: passed
    budget.lap("a", 100.0)
    budget.lap("a", 300.0)  # the longest epoch of stage a counts, with a 1.25 margin: 375 s
    fake_clock.now = 600.0
    assert not budget.time_up(1.0, "a")  # 610 + 375 < 1000
    fake_clock.now = 630.0
    assert budget.time_up(1.0, "a")  # 640 + 375 >= 1000
    fake_clock.now = 400.0
    assert budget.time_up(2.0, "a")  # a stage's last epoch and its end: 410 + 750
    fake_clock.now = 600.0
    assert not budget.time_up(1.0, "b")  # stage b not measured yet: the longest epoch of any stage
    budget.lap("b", 10.0)
    fake_clock.now = 900.0
    assert not budget.time_up(1.0, "b") and budget.time_up(1.0, "a")  # b's own epochs are short
    fake_clock.now = 980.0
    assert not budget.time_up(0.0, "a")  # a post-hoc stage: only once the deadline passed
    assert interrupt.budget_for(None) is None and interrupt.budget_for(5.0) is interrupt.budget_for(5.0)


@pytest.mark.parametrize("text,seconds", [("2h20m", 8400), ("90m", 5400), ("45s", 45), ("1h", 3600), ("1.5h", 5400),
                                          ("1d2h", 93600), ("2:20:00", 8400), ("1-00:00:00", 86400), (" 90 min ", 5400)])
def test_time_limit_spellings(text, seconds):
    assert interrupt.parse_time_limit(text) == seconds


def test_ranks_agree_on_why_they_stop():
    from ltbench.engine.trainer import Trainer

    def trainer(other_rank: tuple[bool, bool]) -> Trainer:
        """Rank 0 of two, neither signalled nor out of time itself; the other rank's flags are OR-ed in."""
        dist = types.SimpleNamespace(any=lambda *flags: [bool(a or b) for a, b in zip(flags, other_rank)])
        return Trainer(None, types.SimpleNamespace(device="cpu"), {}, "fp32", dist=dist,
                       stop=interrupt.GracefulStop(TimeBudget(deadline=1e18)))

    out_of_time = trainer((False, True))
    assert out_of_time.stop_agreed() and out_of_time.stop.timed_out
    stop = out_of_time.stop.error("stopped")
    assert isinstance(stop, TimeLimitReached) and stop.exit_code == 75
    signalled = trainer((True, True))
    assert signalled.stop_agreed() and not signalled.stop.timed_out
    assert signalled.stop.error("stopped").exit_code == 128 + signal.SIGTERM
    assert not trainer((False, False)).stop_agreed()


# --- slurm: a job that reaches its time limit is requeued as the same run, resumed ------------------------
def test_a_submitit_job_is_requeued_as_the_same_run_resumed(tmp_path, monkeypatch):
    import dataclasses

    from submitit.helpers import DelayedSubmission

    from ltbench.sweep import backends, load_suite, plan_sweep
    from ltbench.sweep.backends import RunJob

    config = dataclasses.asdict(RunConfig(method="crt", out=str(tmp_path), run_name="crt-1", deadline=5.0))
    delayed = RunJob().checkpoint(config)  # what submitit's signal handler requeues
    assert isinstance(delayed, DelayedSubmission) and isinstance(delayed.function, RunJob)
    assert delayed.args == ({**config, "resume": True},) and delayed.kwargs == {}
    assert RunJob().checkpoint({**config, "run_name": None}) is None  # no folder to continue: not requeued

    started = []
    monkeypatch.setattr(backends, "run_one", lambda c: started.append(c) or {"run_name": c["run_name"]})
    RunJob()(delayed.args[0])  # requeued before its folder existed: it starts the run
    assert started[-1]["resume"] is False and started[-1]["deadline"] is None  # the job's budget is slurm's
    (tmp_path / "runs" / "crt-1").mkdir(parents=True)
    (tmp_path / "runs" / "crt-1" / "config.json").write_text("{}")
    RunJob()(delayed.args[0])
    assert started[-1]["resume"] is True and started[-1]["run_name"] == "crt-1"
    (tmp_path / "runs" / "crt-1" / "metrics.json").write_text(json.dumps({"run_name": "crt-1", "acc": 50.0,
                                                                         "stages": [{"reused": True, "name": "a"}]}))
    assert RunJob()(delayed.args[0]) == {"run_name": "crt-1", "acc": 50.0, "reused": ["a"]} and len(started) == 2

    # a sweep names each submitit job's run folder before submitting it, so a requeued job finds it
    suite = write_suite_file(tmp_path, 'methods = ["ce", "crt"]\nseeds = [0, 1]\nrecipe = "smoke"\n'
                                       'precision = "fp32"\n')
    runs = plan_sweep(load_suite(suite, tmp_path / "results"), tmp_path / "results", "submitit-local")
    names = [run.config.run_name for run in runs]
    assert all(names) and len(set(names)) == 4
    assert all(run.config.run_name is None for run in plan_sweep(load_suite(suite, tmp_path / "results"),
                                                                   tmp_path / "results", "local"))


def test_a_submitit_job_signalled_before_its_time_limit_is_requeued_and_resumes_bit_exactly(reference, tmp_path):
    """submitit's local executor plays slurm: USR2 (what slurm sends `signal_delay_s` before the time limit) to
    the job's process; submitit calls RunJob.checkpoint, the job exits to be requeued and starts again."""
    import dataclasses
    import os
    import time

    from ltbench.sweep import load_suite, plan_sweep
    from ltbench.sweep.backends import SlurmOptions, SubmititBackend

    suite = write_suite_file(tmp_path, 'methods = ["crt"]\nrecipe = "smoke"\nprecision = "fp32"\ndevice = "cpu"\n')
    results = tmp_path / "results"
    (run,) = plan_sweep(load_suite(suite, results), results, "submitit-local")
    job = SubmititBackend("local", results / "logs", SlurmOptions(timeout_min=10), "t").submit(
        dataclasses.asdict(run.config))
    run_dir = results / "runs" / run.config.run_name
    waited = time.monotonic()
    while not (run_dir / "checkpoints" / "last.pt").exists():  # the job is training: its first epoch is saved
        assert time.monotonic() - waited < 300 and not job.done(), "the job saved no checkpoint"
        time.sleep(0.2)
    os.kill(json.loads((run_dir / ".lock").read_text())["pid"], signal.SIGUSR2)  # the run lock names its process
    summary = job.result()
    assert summary["run_name"] == run.config.run_name
    metrics = read_run(results, run.config.run_name)
    assert "resumed_from" in metrics and len(metrics["spans"]) == 2
    assert_same_results(results, run.config.run_name, reference)
