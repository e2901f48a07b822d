"""A table of bad inputs through the CLI: each ends with a non-zero exit code, ONE clear line on stderr
(no traceback) that names the problem and the fix, and leaves the results folder exactly as it was."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ltbench.cli import app

FAST = ["--recipe", "smoke", "--precision", "fp32", "--device", "cpu", "-q"]

BROKEN_PLUGIN = '''
from ltbench import Method, register_method

raise RuntimeError("boom while importing")


@register_method("exploding")
class Exploding(Method):
    def stages(self, recipe):
        return [recipe.representation()]
'''


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def snapshot(root: Path) -> dict:
    """Every file and folder under root with its size and mtime: any write shows up."""
    return {str(p.relative_to(root)): (p.is_dir(), p.stat().st_size if p.is_file() else 0, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*"))}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> dict:
    """A results folder with a finished run ('done') and an unfinished one ('half'), plus bad data folders."""
    root = tmp_path_factory.mktemp("bad-input")
    out = root / "results"
    result = invoke("run", "--method", "ce", *FAST, "--epochs", "1", "--out", out, "--run-name", "done")
    assert result.exit_code == 0, result.output
    shutil.copytree(out / "runs" / "done", out / "runs" / "half")
    (out / "runs" / "half" / "metrics.json").unlink()  # stopped before it finished, no checkpoint: resumable

    empty = root / "empty-data"
    empty.mkdir()
    imagenet = root / "imagenet-lt"  # the published-list layout with one broken line
    (imagenet / "train" / "n01440764").mkdir(parents=True)
    (imagenet / "train" / "n01440764" / "a.JPEG").write_bytes(b"not decoded before the lists are read")
    (imagenet / "ImageNet_LT_train.txt").write_text("train/n01440764/a.JPEG 0\ntrain/n01440764/b.JPEG zero\n")
    for split in ("val", "test"):
        (imagenet / f"ImageNet_LT_{split}.txt").write_text("train/n01440764/a.JPEG 0\n")

    plugins = root / "plugins"
    plugins.mkdir()
    (plugins / "exploding.py").write_text(BROKEN_PLUGIN)
    not_a_folder = root / "a-file"
    not_a_folder.write_text("a regular file, so nothing can be created under it\n")
    return {"root": root, "out": out, "empty": empty, "imagenet": imagenet, "plugins": plugins,
            "file": not_a_folder}


# (id, arguments, words the one error line must contain); {out}, {empty}, ... are filled from the workspace
CASES = [
    ("unknown-method", ["--method", "crtt"], ["unknown method 'crtt'", "did you mean 'crt'"]),
    ("unknown-dataset", ["--dataset", "cifar10lt"], ["unknown dataset 'cifar10lt'", "'cifar10-lt'"]),
    ("unknown-backbone", ["--backbone", "resnet33"], ["unknown backbone 'resnet33'", "did you mean", "resnet32"]),
    ("missing-data", ["--dataset", "cifar10-lt", "--data-root", "{empty}"],
     ["dataset 'cifar10-lt' not found under {empty}", "cifar-10-batches-py", "--data-root"]),
    ("malformed-split-list", ["--dataset", "imagenet-lt", "--data-root", "{imagenet}"],
     ["{imagenet}/ImageNet_LT_train.txt:2:", "expected '<relative/path> <integer label>'"]),
    ("imbalance-below-1", ["--imbalance", "0.5"], ["--imbalance 0.5: must be >= 1", "largest class count over"]),
    ("unknown-option-key", ["-o", "beta=0.3"], ["method 'crt' has no option beta"]),
    ("option-without-value", ["-o", "beta"], ["must look like KEY=VALUE"]),
    ("bad-option-choice", ["--method", "crt", "-o", "bn=maybe"], ["bn='maybe'", "choose one of"]),
    ("bad-option-type", ["--method", "label-smoothing", "-o", "epsilon=lots"], ["epsilon='lots'", "expected a float"]),
    ("bad-profile", ["--profile", "linear"], ["profile 'linear'", "exp or step"]),
    ("negative-epochs", ["--epochs", "-1"], ["--epochs -1: must be >= 1"]),
    ("zero-batch", ["--batch-size", "0"], ["--batch-size 0: must be >= 1"]),
    ("unknown-recipe", ["--recipe", "smok"], ["unknown recipe 'smok'", "did you mean 'smoke'"]),
    ("unknown-precision", ["--precision", "fp8"], ["unknown precision 'fp8'"]),
    ("fp16-on-cpu", ["--precision", "fp16"], ["fp16 needs a CUDA GPU"]),
    ("unknown-device", ["--device", "tpu"], ["unknown device 'tpu'"]),
    ("nproc-zero", ["--nproc", "0"], ["--nproc must be >= 1"]),
    ("run-name-with-slash", ["--run-name", "a/b"], ["one folder name"]),
    ("unwritable-out", ["--out", "{file}/results"], ["output folder {file}/results is not writable", "--out"]),
    ("run-name-in-use", ["--run-name", "done"], ["run 'done' already exists", "--run-name", "--resume"]),
    ("resume-without-name", ["--resume"], ["--resume needs --run-name"]),
    ("resume-nothing", ["--resume", "--run-name", "hlf"], ["nothing to resume", "no run 'hlf'", "did you mean 'half'"]),
    ("resume-finished", ["--resume", "--run-name", "done"], ["nothing to resume", "already finished"]),
    ("resume-other-settings", ["--resume", "--run-name", "half", "--epochs", "5"],
     ["epochs 5 (the run has 1)", "keeps its settings"]),
    ("resume-other-method", ["--resume", "--run-name", "half", "--method", "crt"],
     ["method 'crt' (the run has 'ce')"]),
    ("plugin-raises", ["--method", "exploding", "--plugins", "{plugins}"],
     ["unknown method 'exploding'", "{plugins}/exploding.py failed to import", "RuntimeError: boom while importing"]),
]


def _fill(text: str, workspace: dict) -> str:
    return text.format(**{k: str(v) for k, v in workspace.items()})


@pytest.mark.parametrize("case,args,words", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_clear_line_and_changes_nothing(workspace, case, args, words):
    args = [_fill(a, workspace) for a in args]
    if "--out" not in args:
        args += ["--out", str(workspace["out"])]
    if "--method" not in args and "--resume" not in args:  # a resumed run takes its method from config.json
        args = ["--method", "crt", *args]
    defaults = [a for a in FAST if a not in ("smoke", "--recipe")] if "--recipe" in args else FAST
    if "--precision" in args:
        defaults = [a for a in defaults if a not in ("--precision", "fp32")]
    before = snapshot(workspace["root"])
    result = invoke("run", *defaults, *args)
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for word in words:
        assert _fill(word, workspace) in lines[0], (word, lines[0])
    assert snapshot(workspace["root"]) == before  # not a file or folder created, touched or removed


def test_resume_of_a_run_that_is_still_running_is_refused(workspace):
    from ltbench.engine.locks import StageLock

    live = StageLock(workspace["out"] / "runs" / "half" / ".lock", owner="half")  # this live process runs it
    assert live.try_acquire()
    try:
        before = snapshot(workspace["root"])
        result = invoke("run", "--out", workspace["out"], "--run-name", "half", "--resume", "-q")
        assert result.exit_code != 0 and "Traceback" not in result.output
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and "run 'half' is still running" in lines[0] and f"pid {os.getpid()}" in lines[0]
        assert snapshot(workspace["root"]) == before
    finally:
        live.release()


@pytest.mark.parametrize("args", [["--epochs", "abc"], ["--seed", "1.5"], ["--no-such-option"]])
def test_unparsable_options_get_click_usage_errors_and_change_nothing(workspace, args):
    """Type errors are caught by the parser (usage + error box, exit 2): no traceback, nothing written."""
    before = snapshot(workspace["root"])
    result = invoke("run", "--out", workspace["out"], *args)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "Invalid value" in result.output or "No such option" in result.output
    assert snapshot(workspace["root"]) == before


def test_broken_plugin_still_lists_the_other_methods(workspace):
    result = invoke("methods", "--plugins", workspace["plugins"])
    assert result.exit_code == 0
    assert "crt" in result.stdout and "tau-norm" in result.stdout
    warning = " ".join(line.strip() for line in result.stderr.splitlines())  # `methods` may wrap it
    assert warning.startswith("warning: plugin") and warning.count("warning:") == 1
    assert f"{workspace['plugins']}/exploding.py failed to import: RuntimeError: boom while importing" in warning


def test_a_built_in_method_runs_despite_a_broken_plugin_folder(workspace, tmp_path):
    result = invoke("run", "--method", "ce", *FAST, "--epochs", "1", "--plugins", workspace["plugins"],
                    "--out", tmp_path, "--run-name", "ok")
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(warnings) == 1 and "exploding.py failed to import" in warnings[0] and warnings[0].startswith("warning:")


@pytest.mark.parametrize("args,words", [
    (["--method", "crtt"], ["unknown method 'crtt'"]),
    (["--dataset", "cifar10-lt", "--data-root", "{empty}"], ["not found under {empty}"]),
])
def test_no_traceback_reaches_the_terminal(workspace, args, words):
    """The real entry point in a real process (stderr as a terminal user would see it)."""
    args = [_fill(a, workspace) for a in args]
    before = snapshot(workspace["root"])
    proc = subprocess.run([sys.executable, "-m", "ltbench", "run", *FAST, *args, "--out", str(workspace["out"])],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "60"})
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr  # one line even on a narrow terminal
    for word in words:
        assert _fill(word, workspace) in lines[0]
    assert snapshot(workspace["root"]) == before


def test_method_ranges_are_declared_checked_and_listed():
    """``Method.ranges``: numeric options are checked against their declared ranges when the method is
    created (before anything trains), and `ltbench methods NAME` shows them."""
    from ltbench import Method, Range
    from ltbench.errors import ConfigError

    class Smoothing(Method):
        name = "smoothing-test"
        defaults = {"epsilon": 0.1, "tau": -1.0, "steps": 3}
        ranges = {"epsilon": (0, 1, "[)"), "tau": Range(0, 2, also=(-1,)), "steps": Range(1)}

    assert Smoothing(epsilon="0.5", tau="2", steps="7").options == {"epsilon": 0.5, "tau": 2.0, "steps": 7}
    assert Smoothing(tau=-1).options["tau"] == -1.0
    for key, value, allowed in [("epsilon", "1", "in [0, 1)"), ("epsilon", "-0.1", "in [0, 1)"),
                                ("epsilon", "inf", "in [0, 1)"), ("tau", "5", "in [0, 2] or -1"),
                                ("tau", "-0.5", "in [0, 2] or -1"), ("steps", "0", ">= 1")]:
        with pytest.raises(ConfigError, match=rf"option {key}=.* must be {re.escape(allowed)}"):
            Smoothing(**{key: value})
    with pytest.raises(ConfigError, match="option epsilon=nan: expected a number"):
        Smoothing(epsilon="nan")
    result = invoke("methods", "tau-norm")
    assert result.exit_code == 0 and "in [0, 2] or -1" in result.stdout and "in [0.001, 2]" in result.stdout


def test_loading_plugins_writes_nothing_into_their_folder(tmp_path, monkeypatch):
    """Whatever PYTHONDONTWRITEBYTECODE says: a plugin folder is the user's, ltbench leaves it as it was."""
    from ltbench.registry import load_methods

    monkeypatch.setattr(sys, "dont_write_bytecode", False)  # as on a machine without PYTHONDONTWRITEBYTECODE
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "fine.py").write_text(BROKEN_PLUGIN.replace('raise RuntimeError("boom while importing")', "")
                                     .replace('"exploding"', '"fine-plugin-test"'))
    (plugins / "broken.py").write_text(BROKEN_PLUGIN)
    before = snapshot(tmp_path)
    registry = load_methods([plugins])
    assert "fine-plugin-test" in registry and any("broken.py failed to import" in p for p in registry.load_errors)
    assert snapshot(tmp_path) == before and not (plugins / "__pycache__").exists()
    assert sys.dont_write_bytecode is False  # restored for everything else
