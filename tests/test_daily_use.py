"""Daily use: commands that never train start without torch, a piped run log has one full line per epoch,
the rate and ETA are stage averages, --tensorboard mirrors epochs.jsonl, one --results vocabulary."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import REPO, invoke, make_run, table_rows

SMOKE = ["--recipe", "smoke", "--epochs", "2", "--stage2-epochs", "1", "--precision", "fp32"]


@pytest.fixture(scope="module")
def piped_run(tmp_path_factory):
    """One cRT run as a user's shell would start it with its log piped to a file (not a terminal), $COLUMNS 80
    as a login shell sets it."""
    results = tmp_path_factory.mktemp("daily") / "results"
    env = {**{k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}, "COLUMNS": "80"}
    proc = subprocess.run([sys.executable, "-m", "ltbench", "run", "--method", "crt", *SMOKE, "--tensorboard",
                           "--results", str(results), "--run-name", "crt"], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    return results, proc.stderr, proc.stdout


def ltbench_piped(*args, columns: int = 80) -> subprocess.CompletedProcess:
    """`ltbench ARGS` with stdout a pipe (a log file, `| tee`) and $COLUMNS set."""
    proc = subprocess.run([sys.executable, "-m", "ltbench", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": str(columns)})
    assert proc.returncode == 0, proc.stderr
    return proc


def _torch_importers(commands: list[list[str]]) -> list[str]:
    """The commands (first words) after which torch or timm is imported, when they run one after another in
    one fresh interpreter (one Python start for them all; once one imports torch, the later ones count too)."""
    code = ("import sys\nfrom ltbench.cli import app\nfor args in %r:\n    try:\n        app(args)\n"
            "    except SystemExit:\n        pass\n"
            "    print('TORCH', args[0], 'torch' in sys.modules or 'timm' in sys.modules)\n" % (commands,))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    lines = [x.split() for x in proc.stdout.splitlines() if x.startswith("TORCH ")]
    assert len(lines) == len(commands), proc.stdout + proc.stderr
    return [line[1] for line in lines if line[2] == "True"]


COMMITTED = REPO / "results" / "cpu"


def test_help_table_plot_and_datasets_do_not_import_torch(piped_run, tmp_path):
    results, *_ = piped_run
    plots = [["plot", kind, "--results", str(results), "--out", str(tmp_path / f"{kind}.png")]
             for kind in ("per-class", "reliability")]
    assert _torch_importers([["--help"], ["datasets"], ["table", "--results", str(results)], *plots]) == []
    assert (tmp_path / "per-class.png").is_file() and (tmp_path / "reliability.png").is_file()


def test_methods_and_tables_of_old_runs_do_not_import_torch():
    """#31 item 3: the committed results (runs older than config.json's method_defaults) and `ltbench methods`
    read the built-ins' declarations from methods/declarations.json, not by importing the method files."""
    assert any("method_defaults" not in (run / "config.json").read_text()
               for run in (COMMITTED / "cifar10-lt-if100" / "runs").iterdir())  # the old runs are still there
    commands = [["table", "--results", str(COMMITTED / folder)] for folder in ("cifar10-lt-if100", "mnist-lt-if100",
                                                                               "pre-12/cifar10-lt-if100")]
    commands += [["table", "--results", str(COMMITTED / "mnist-lt-if100"), "--layout", "long"],
                 ["methods"], ["methods", "dasl"], ["methods", "tau-norm"]]
    assert _torch_importers(commands) == []
    # a plugin file imports ltbench.Method, hence torch: the check itself can tell
    assert _torch_importers([["methods", "--plugins", str(REPO / "docs" / "examples")]]) == ["methods"]


def test_the_declarations_record_is_the_methods_own():
    """methods/declarations.json is what the built-in methods declare; when this fails, a method (or the
    recipes its stages come from) changed: run `python -m ltbench.declarations` and commit the file."""
    from ltbench import declarations

    record = json.loads((declarations.methods_folder() / declarations.DECLARATIONS_FILE).read_text())
    assert record == json.loads(declarations.text(declarations.generate())), \
        "methods/declarations.json is stale: run `python -m ltbench.declarations`"
    assert declarations.builtin() == record["methods"]


def test_an_edited_method_file_is_read_from_the_file(tmp_path, monkeypatch):
    """A record made from other method files is not trusted: tables and `ltbench methods` import the methods."""
    import shutil

    from ltbench import declarations

    folder = tmp_path / "methods"
    shutil.copytree(declarations.methods_folder(), folder)
    assert declarations.builtin(folder) is not None
    (folder / "crt.py").write_text((folder / "crt.py").read_text().replace('"train"}', '"frozen"}', 1))
    assert declarations.builtin(folder) is None
    (folder / declarations.DECLARATIONS_FILE).write_text("{not json")
    assert declarations.builtin(folder) is None
    monkeypatch.setattr(declarations, "builtin", lambda folder=None: None)  # the installed files, edited
    result = invoke("methods", "crt")
    assert result.exit_code == 0 and "bn" in result.stdout and "1. representation (all, instance)" in result.stdout


def test_a_piped_run_log_has_one_full_line_per_epoch(piped_run):
    _, log, _ = piped_run
    lines = log.splitlines()
    assert lines[0].startswith("reading digits-lt") and lines[1].startswith("building resnet32")
    epochs = [x for x in lines if " epoch " in x and x.startswith("stage ")]
    assert [x.split(":")[0] for x in epochs] == ["stage 1/2 representation epoch 1/2", "stage 1/2 representation "
                                                 "epoch 2/2", "stage 2/2 classifier epoch 1/1"]
    assert all("loss" in x and "img/s" in x and "eta" in x for x in epochs)
    assert any(len(x) > 80 for x in epochs)  # whole lines, not a bar cut to 80 columns
    assert "━" not in log and any(x.startswith("stage 1/2 representation: 2 epoch(s) done in") for x in lines)


def test_rate_and_eta_are_stage_averages_after_the_first_step(monkeypatch):
    from ltbench.engine import progress

    clock = [100.0]
    monkeypatch.setattr(progress.time, "perf_counter", lambda: clock[0])
    logged = []
    reporter = progress.Reporter(quiet=False)
    reporter.log = logged.append
    stage = types.SimpleNamespace(name="s", epochs=2)
    with reporter.stage(0, 1, stage, "key", steps_per_epoch=5) as bar:
        clock[0] += 30.0  # the first step pays the warm-up: not part of the rate
        bar.step(0, 32)
        assert bar.rate() is None and bar.eta() is None
        for step in range(1, 5):
            clock[0] += 1.0 if step % 2 else 3.0  # uneven batches: the average, not the last batch
            bar.step(step, 32)
        assert bar.rate() == pytest.approx(4 * 32 / 8.0) and bar.eta() == pytest.approx(5 * 2.0)
        bar.epoch_done(0, {"loss": 1.0, "train_acc": 50.0, "images_per_s": 20.0})
    assert "16 img/s in the stage" in logged[-2] and "eta 0:00:10" in logged[-2]
    assert logged[-1].startswith("stage 1/1 s: 2 epoch(s) done in 0:00:38, 16 img/s on average")


def test_tensorboard_scalars_are_the_epoch_records(piped_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    results, *_ = piped_run
    run = results / "runs" / "crt"
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    records = [json.loads(x) for x in (run / "epochs.jsonl").read_text().splitlines()]
    for stage in ("representation", "classifier"):
        ours = [(r["epoch"], r["loss"]) for r in records if r["stage"] == stage]
        theirs = [(e.step, e.value) for e in events.Scalars(f"{stage}/loss")]
        assert [s for s, _ in theirs] == [s for s, _ in ours]
        assert [v for _, v in theirs] == pytest.approx([v for _, v in ours], rel=1e-6)
    metrics = json.loads((run / "metrics.json").read_text())
    final = events.Scalars("classifier/test_acc")[-1].value
    assert final == pytest.approx(metrics["stages"][-1]["metrics"]["acc"], rel=1e-6)


def test_run_results_option_and_the_deprecated_out(tmp_path):
    result = invoke("run", "--method", "ce", *SMOKE, "--epochs", "1", "-q", "--out", tmp_path / "old",
                    "--run-name", "a")  # one epoch: the test is about the folder options
    assert result.exit_code == 0, result.output
    assert "deprecated; use --results" in result.output and (tmp_path / "old" / "runs" / "a" / "metrics.json").is_file()
    both = invoke("run", "--method", "ce", *SMOKE, "--out", tmp_path / "x", "--results", tmp_path / "y")
    assert both.exit_code != 0 and "name two results folders" in both.output
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_sweep_data_root_replaces_the_suites(tmp_path):
    from ltbench.sweep import load_suite

    suite = tmp_path / "s.toml"
    suite.write_text('name = "s"\nmethods = ["ce", "crt"]\ndatasets = ["digits-lt"]\nseeds = [0, 1]\n'
                     'recipe = "smoke"\ndata_root = "/nowhere"\n')
    assert {c.data_root for _, c in load_suite(suite, tmp_path).runs} == {"/nowhere"}
    given = load_suite(suite, tmp_path, data_root=tmp_path / "data").runs
    assert len(given) == 4 and {c.data_root for _, c in given} == {str((tmp_path / "data").resolve())}
    dry = invoke("sweep", suite, "--results", tmp_path / "r", "--data-root", tmp_path / "data", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "--data-root" in invoke("sweep", "--help").output


# --- a log never loses a digit or a name (#31 item 2) ------------------------------------------------------

def _markdown_rows(text: str) -> list[list[str]]:
    lines = [line for line in text.splitlines() if line.startswith("| ")][1:]  # no header
    return [[cell.strip().removeprefix("**").removesuffix("**") for cell in line.strip("| ").split(" | ")]
            for line in lines]


def test_the_end_of_run_table_in_a_piped_log_is_whole(piped_run):
    results, _, table = piped_run
    metrics = json.loads((results / "runs" / "crt" / "metrics.json").read_text())
    rows = table_rows(table)
    assert "…" not in table and len(rows) == 2, table
    for row, stage in zip(rows, metrics["stages"]):
        m = stage["metrics"]
        assert row == [stage["name"], f"{m['acc']:.2f}", f"{m['many_acc']:.2f}", f"{m['medium_acc']:.2f}",
                       "-" if m["few_acc"] is None else f"{m['few_acc']:.2f}", f"{m['ece']:.2f}", f"{m['nll']:.3f}",
                       f"{m['wrong_confidence']:.3f}"], table
    assert max(map(len, table.splitlines())) > 80  # wider than $COLUMNS: whole, not fitted


def test_a_piped_table_is_whole_at_80_columns(tmp_path):
    """The long layout with a --compare-to column is ~200 columns wide: piped at COLUMNS=80 every cell is the
    markdown table's cell, digit for digit (rich used to print `82.…`)."""
    labels = np.arange(1000) % 10
    for method, right, options in [("crt", 700, {}), ("dasl", 750, {"beta": 0.3, "soft_labels": "class"}),
                                   ("label-smoothing", 720, {"epsilon": 0.2})]:
        for seed in (0, 1):
            make_run(tmp_path, f"{method}-{seed}", method, seed, right / 10 + seed, recipe="cpu", options=options,
                     logits=np.eye(10)[np.where(np.arange(1000) < right, labels, (labels + 1) % 10)], labels=labels)
    for layout in ("long", "paper"):
        args = ["table", "--results", tmp_path, "--layout", layout, "--compare-to", "crt", "--replicates", "200"]
        rich = ltbench_piped(*args).stdout
        markdown = ltbench_piped(*args, "--format", "markdown").stdout
        assert "…" not in rich and table_rows(rich) == _markdown_rows(markdown), rich
        assert "dasl[beta=0.3,soft_labels=class]" in table_rows(rich)[-1][0]


def test_methods_piped_at_80_columns_one_line_each(tmp_path):
    """Piped: every name whole, each summary and reference on one line of its own (2 lines a method, not the
    ~250 lines of 10-20 per summary that rich's folding gave at 80 columns)."""
    from ltbench.declarations import builtin

    declared = builtin()
    text = ltbench_piped("methods").stdout
    rows = {row[0]: row for row in table_rows(text)}
    assert set(rows) == set(declared) and "…" not in text
    for name, row in rows.items():
        assert row[1] == declared[name]["family"] and row[4] == "built-in"
        assert row[2] == f"{declared[name]['summary']} reference: {declared[name]['reference']}"
        assert any(line.startswith(f"│ {name} ") for line in text.splitlines())  # on one line, not split
    body = [line for line in text.splitlines() if line.startswith("│")]
    assert len(body) == 2 * len(declared)
    detail = ltbench_piped("methods", "tau-norm").stdout
    option = next(line for line in detail.splitlines() if line.startswith("│ bias "))
    assert "classifier-balancing tau_norm.py:88-114@f162ade); keep: it stays as stage 1 left it" in option


def test_methods_on_an_80_column_terminal(monkeypatch):
    """On a terminal the list fits: names and stages whole, one section per family, the prose cut with …"""
    import io

    from rich.console import Console

    from ltbench import cli
    from ltbench.declarations import builtin

    screen = io.StringIO()
    monkeypatch.setattr(cli, "out", Console(file=screen, force_terminal=True, width=80, color_system=None))
    assert invoke("methods").exit_code == 0
    lines = screen.getvalue().splitlines()
    assert max(map(len, lines)) <= 80 and len(lines) < 3 * len(builtin())
    for name, declared in builtin().items():
        line = next(line for line in lines if line.startswith(f"{name} "))
        assert declared["stages"][0]["name"] in line and declared["summary"][:20] in line
    assert any(line.startswith("logit adjustment ") for line in lines)  # a family heads its section
    screen.seek(0)
    screen.truncate(0)
    assert invoke("methods", "dasl").exit_code == 0
    assert max(map(len, screen.getvalue().splitlines())) <= 80 and "…" not in screen.getvalue()
