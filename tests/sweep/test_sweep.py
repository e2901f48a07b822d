"""`ltbench sweep`: suite validation, finished runs skipped, stage 1 shared, scheduling, submitit."""
import json
import shutil
import types

import pytest
import torch

from ltbench.config import RunConfig
from ltbench.engine.store import RunStore
from ltbench.errors import ConfigError
from ltbench.files import write_json
from ltbench.sweep import SweepRun, load_suite, schedule
from tests.helpers import invoke, write_fault_plugin

TINY = """
methods = ["ce", "crt"]
datasets = ["digits-lt"]
recipe = "smoke"
epochs = 1
stage2_epochs = 1
precision = "fp32"
device = "cpu"
"""


def write_suite(folder, text, name="tiny.toml"):
    path = folder / name
    path.write_text(text)
    return path


def finished(results) -> dict:
    """method -> metrics.json of every finished run."""
    runs = {}
    for metrics in (results / "runs").glob("*/metrics.json"):
        config = json.loads((metrics.parent / "config.json").read_text())
        runs[config["method"]] = json.loads(metrics.read_text())
    return runs


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """The tiny suite listed (--dry-run) and then run once, in one results folder."""
    folder = tmp_path_factory.mktemp("sweep")
    suite, results = write_suite(folder, TINY), folder / "results"
    dry = invoke("sweep", suite, "--results", results, "--dry-run")
    first = invoke("sweep", suite, "--results", results, "-q")
    return suite, results, dry, first


def test_dry_run_lists_what_trains_and_what_is_reused(swept):
    suite, results, dry, _ = swept
    assert dry.exit_code == 0, dry.output
    crt, ce = dry.stdout.strip().splitlines()  # the most work first: crt trains the shared stage 1
    assert "run" in crt and "crt digits-lt seed 0: representation: train" in crt and "classifier: train" in crt
    assert "ce digits-lt seed 0: representation: reuse" in ce and "(trained by crt digits-lt seed 0)" in ce


def test_sweep_runs_the_grid_and_reuses_stage_1(swept):
    _, results, _, first = swept
    assert first.exit_code == 0, first.output
    runs = finished(results)
    assert sorted(runs) == ["ce", "crt"]
    assert runs["crt"]["stages"][0]["reused"] is False and runs["ce"]["stages"][0]["reused"] is True
    assert runs["crt"]["stages"][0]["key"] == runs["ce"]["stages"][0]["key"]
    assert "2 run(s) done, 0 already finished" in first.stderr


def test_a_second_sweep_executes_nothing(swept):
    suite, results, _, _ = swept
    before = sorted(p.name for p in (results / "runs").iterdir())
    again = invoke("sweep", suite, "--results", results, "-q")
    assert again.exit_code == 0, again.output
    assert "start" not in again.stderr and "0 run(s) done, 2 already finished" in again.stderr
    assert sorted(p.name for p in (results / "runs").iterdir()) == before
    listed = invoke("sweep", suite, "--results", results, "--dry-run").stdout.strip().splitlines()
    assert len(listed) == 2 and all(" done " in line for line in listed)


def test_submitit_local_executor_resumes_the_suite(swept, tmp_path):
    suite, results, _, _ = swept
    copy = tmp_path / "results"
    shutil.copytree(results, copy)
    shutil.rmtree(next((copy / "runs").glob("crt-*")))  # as if the sweep had stopped before crt
    result = invoke("sweep", suite, "--results", copy, "--executor", "submitit-local", "-q")
    assert result.exit_code == 0, result.output
    assert "1 run(s) done, 1 already finished" in result.stderr
    assert finished(copy)["crt"]["stages"][0]["reused"] is True
    assert list((copy / "sweeps" / "tiny" / "slurm_logs").glob("*_result.pkl"))


def test_retrain_runs_every_run_again_and_trains_each_stage_once(swept, tmp_path):
    suite, results, _, _ = swept
    copy = tmp_path / "results"
    shutil.copytree(results, copy)
    before = {method: m["run_name"] for method, m in finished(copy).items()}
    listed = invoke("sweep", suite, "--results", copy, "--dry-run", "--retrain").stdout
    assert "already" not in listed and "done" not in listed and "(cached)" not in listed
    result = invoke("sweep", suite, "--results", copy, "--retrain", "-q")
    assert result.exit_code == 0, result.output
    assert "2 run(s) done, 0 already finished" in result.stderr
    runs = [json.loads(p.read_text()) for p in (copy / "runs").glob("*/metrics.json")]
    new = [m for m in runs if m["run_name"] not in before.values()]
    assert sorted(len(m["stages"]) for m in new) == [1, 2]
    first_stages = [m["stages"][0] for m in new]
    assert sorted(stage["reused"] for stage in first_stages) == [False, True]  # trained once, by this sweep
    assert {stage["trained_by"] for stage in first_stages} <= {m["run_name"] for m in new}


def test_an_interrupted_run_is_resumed_in_its_folder(swept, tmp_path):
    suite, results, _, _ = swept
    copy = tmp_path / "results"
    shutil.copytree(results, copy)
    ce_dir = next((copy / "runs").glob("ce-*"))
    (ce_dir / "metrics.json").unlink()  # as if killed before it finished
    listed = invoke("sweep", suite, "--results", copy, "--dry-run").stdout
    assert f"resume     ce digits-lt seed 0 (runs/{ce_dir.name})" in listed
    result = invoke("sweep", suite, "--results", copy, "-q")
    assert result.exit_code == 0, result.output
    assert (ce_dir / "metrics.json").is_file() and len(list((copy / "runs").iterdir())) == 2


def test_table_and_plots_read_the_sweep_results(swept):
    _, results, _, _ = swept
    table = invoke("table", "--results", results, "--layout", "long", "--format", "csv")
    assert table.exit_code == 0, table.output
    rows = table.stdout.strip().splitlines()[1:]
    assert [row.split(",")[0] for row in rows] == ["ce", "crt"] and "smoke[epochs=1,stage2_epochs=1]" in rows[0]
    for kind in ("per-class", "reliability"):
        assert invoke("plot", kind, "--results", results).exit_code == 0
        assert (results / "plots" / f"{kind}.png").stat().st_size > 0


def test_worker_processes_run_independent_runs_at_once(tmp_path):
    suite = write_suite(tmp_path, TINY.replace('["ce", "crt"]', '["ce"]') + "seeds = [0, 1]\n")
    result = invoke("sweep", suite, "--results", tmp_path / "results", "--jobs", "2", "-q")
    assert result.exit_code == 0, result.output
    events = [line.split()[0] for line in result.stderr.splitlines() if line.startswith(("start", "done"))]
    assert events == ["start", "start", "done", "done"]
    assert len(list((tmp_path / "results" / "runs").glob("*/metrics.json"))) == 2


def test_a_killed_worker_fails_its_runs_and_the_sweep_goes_on(tmp_path):
    """A worker killed (out of memory, say) breaks the process pool; the runs on it are reported as failed
    in one line each, new workers take the remaining runs, and the sweep ends in one error line."""
    # CE whose process is killed (SIGKILL) at its first step
    write_fault_plugin(tmp_path / "killer.py", "ce-killed", "ce", env="LTBENCH_TEST_KILLED_AT", default="kill:0:0:0")
    suite = write_suite(tmp_path, TINY.replace('["ce", "crt"]', '["ce-killed", "ce"]') +
                        f'seeds = [0, 1]\nplugins = ["{tmp_path / "killer.py"}"]\n')
    result = invoke("sweep", suite, "--results", tmp_path / "results", "--jobs", "2", "-q")
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.exception  # no traceback
    failed = sorted(line for line in result.stderr.splitlines() if line.startswith("FAILED"))
    assert [line.split(":")[0] for line in failed] == ["FAILED ce-killed digits-lt seed 0",
                                                        "FAILED ce-killed digits-lt seed 1"], result.stderr
    assert all("worker process died" in line for line in failed)
    for seed in (0, 1):  # ce waited for ce-killed's stage 1 (the same stage), then ran on new workers
        assert f"done   ce digits-lt seed {seed}" in result.stderr, result.stderr
    assert "error: 2 of 4 runs failed" in result.stderr


class FakeJob:
    """Finishes on its second poll, leaving the artifacts of its trainable stages behind."""

    def __init__(self, run: SweepRun, store: RunStore):
        self.run, self.store, self.polls = run, store, 0

    def done(self) -> bool:
        self.polls += 1
        if self.polls == 2:
            for _, key, cacheable in self.run.stages:
                if cacheable:
                    self.store.stage_dir(key).mkdir(parents=True, exist_ok=True)
                    write_json(self.store.stage_dir(key) / "meta.json", {"key": key})
        return self.polls >= 2

    def result(self) -> dict:
        return {"run_name": self.run.label, "acc": 50.0, "reused": []}


class FakeBackend:
    def __init__(self, runs, store):
        self.runs, self.store, self.jobs, self.events = {r.label: r for r in runs}, store, [], []

    def submit(self, config: dict) -> FakeJob:
        running = [job.run.label for job in self.jobs if job.polls < 2]
        self.events.append((config["run_name"], running, self.store.has_stage("k1")))
        job = FakeJob(self.runs[config["run_name"]], self.store)
        self.jobs.append(job)
        return job


def fake_run(label: str, *keys: str, work: dict[str, float] | None = None) -> SweepRun:
    return SweepRun(label, RunConfig(method="ce", run_name=label), f"run-{label}",
                    [(f"stage{i}", key, True) for i, key in enumerate(keys)], work=work or {})


def test_no_two_runs_train_the_same_stage_at_once(tmp_path):
    store = RunStore(tmp_path)
    runs = [fake_run("ce", "k1"), fake_run("crt", "k1", "k2"), fake_run("other", "k3")]
    backend = FakeBackend(runs, store)
    done, failed = schedule(runs, backend, store, jobs=3, log=lambda message: None, poll_s=0)
    assert (done, failed) == (3, [])
    started = {label: (running, cached) for label, running, cached in backend.events}
    assert [label for label, _, _ in backend.events] == ["ce", "other", "crt"]
    assert started["other"] == (["ce"], False)  # unrelated runs go in parallel
    assert started["crt"][1] is True  # crt waited for ce's stage 1 artifact


def test_cached_stages_do_not_hold_runs_back(tmp_path):
    store = RunStore(tmp_path)
    store.stage_dir("k1").mkdir(parents=True)
    write_json(store.stage_dir("k1") / "meta.json", {"key": "k1"})
    runs = [fake_run("crt", "k1", "k2"), fake_run("lws", "k1", "k4")]
    backend = FakeBackend(runs, store)
    schedule(runs, backend, store, jobs=2, log=lambda message: None, poll_s=0)
    assert backend.events[1][:2] == ("lws", ["crt"])


def test_runs_with_the_most_work_left_start_first(tmp_path):
    """The six-method sweep on two workers: given in plan order (ce's consumers before dasl), the runs that
    train a stage start before those that only reuse one, so dasl does not run last while a worker idles."""
    store = RunStore(tmp_path)
    runs = [fake_run("ce", "s1", work={"s1": 10}), fake_run("crt", "s1", "c", work={"s1": 10, "c": 1.2}),
            fake_run("lws", "s1", "l", work={"s1": 10, "l": 1.2}), fake_run("ls", "s2", work={"s2": 10}),
            fake_run("dasl", "s3", "d", work={"s3": 10, "d": 1.2})]
    backend = FakeBackend(runs, store)
    assert schedule(runs, backend, store, jobs=2, log=lambda message: None, poll_s=0) == (5, [])
    assert [label for label, _, _ in backend.events] == ["crt", "dasl", "ls", "lws", "ce"]
    assert runs[1].remaining(store) == 0 and runs[2].remaining(store) == 0


def test_pool_runs_share_the_cores_and_a_lone_run_takes_them_all():
    import multiprocessing

    from ltbench.sweep import CoreShare

    before = torch.get_num_threads()
    running = multiprocessing.get_context("spawn").Value("i", 0)
    first, second = CoreShare(running, cores=4), CoreShare(running, cores=4)
    try:
        with first, first.reporter().stage(0, 1, types.SimpleNamespace(name="s", epochs=1), "k", 3) as bar:
            assert torch.get_num_threads() == 4  # alone
            with second:
                assert running.value == 2 and torch.get_num_threads() == 2
                bar.step(0, 8)
                assert torch.get_num_threads() == 2
            bar.step(1, 8)  # the other run finished: this one takes all cores at its next step
            assert running.value == 1 and torch.get_num_threads() == 4
        assert running.value == 0
    finally:
        torch.set_num_threads(before)


def test_suite_expansion_with_variants_and_method_options(tmp_path):
    suite = load_suite(write_suite(tmp_path, """
name = "expansion"
methods = ["ce"]
datasets = ["digits-lt"]
imbalance = [10, 20]
seeds = [0, 1]
recipe = "smoke"

[options.las]
smooth_head = 0.2

[[variants]]
name = "las-strong"
method = "las"
options = { smooth_tail = 0.1 }
"""), tmp_path / "results")
    assert suite.name == "expansion" and len(suite.runs) == 8
    labels = [label for label, _ in suite.runs]
    assert "ce digits-lt IF10 seed 0" in labels and "las-strong digits-lt IF20 seed 1" in labels
    variant = dict(suite.runs)["las-strong digits-lt IF20 seed 1"]
    assert variant.method == "las" and variant.method_options == {"smooth_head": 0.2, "smooth_tail": 0.1}
    assert variant.imbalance == 20 and variant.seed == 1 and variant.recipe == "smoke"
    assert variant.out == str((tmp_path / "results").resolve())


@pytest.mark.parametrize("text, message", [
    (TINY + "epoch = 3\n", "unknown key 'epoch'; did you mean 'epochs'?"),
    (TINY.replace('"crt"', '"cRT2"'), "unknown method 'cRT2'"),
    (TINY.replace("epochs = 1", 'epochs = "ten"'), "'epochs' must be int"),
    (TINY + '[[variants]]\nname = "x"\nmethod = "ce"\noptions = { beta = 1 }\n', "has no option beta"),
    (TINY.replace("digits-lt", "digits-ltt"), "unknown dataset 'digits-ltt'"),
])
def test_bad_suites_are_one_line_naming_the_file(tmp_path, text, message):
    path = write_suite(tmp_path, text, "bad-suite.toml")
    with pytest.raises(ConfigError, match="bad-suite.toml"):
        load_suite(path)
    result = invoke("sweep", path, "--results", tmp_path / "results", "--dry-run")
    assert result.exit_code != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "bad-suite.toml" in lines[0]
