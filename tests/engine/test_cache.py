"""The stage cache never serves a stage that differs from what a fresh run would train (docs/protocol.md,
"Stage keys"): post-hoc steps never reach a shared artifact, a method's code and the data are in the key."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers import FAST, REPO, fast_run as run, invoke, logits_of

POSTHOC_PLUGIN = '''
import torch
from ltbench import Method, Stage, register_method


@register_method("posthoc-adjust", summary="post-hoc logit adjustment folded into the classifier bias")
class PosthocAdjust(Method):
    def stages(self, recipe):
        return [recipe.representation(), Stage("adjust", trainable="none", post="adjust")]

    @torch.no_grad()
    def post_stage(self, state):
        state.model.classifier.bias.sub_(torch.log(state.data.class_counts.float()))
        return {"adjusted": True}
'''

EDITABLE_PLUGIN = '''
from torch.nn import functional as F
from ltbench import Method, register_method


@register_method("scaled-ce", summary="cross-entropy times a constant")
class ScaledCE(Method):
    def stages(self, recipe):
        return [recipe.representation(loss="scaled-ce")]

    def loss(self, out, batch, state):
        return SCALE * F.cross_entropy(out.logits.float(), batch["y"])


SCALE = 1.0
'''



@pytest.fixture(scope="module")
def plugins(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("plugins")
    (folder / "posthoc_adjust.py").write_text(POSTHOC_PLUGIN)
    return folder


@pytest.mark.parametrize("first", ["tau-norm", "ncm", "posthoc-adjust"])
def test_a_post_hoc_method_first_leaves_ce_bit_identical(tmp_path, ce_alone, plugins, first):
    metrics = run(tmp_path, first, "first", "--plugins", plugins)
    assert metrics["stages"][-1]["post"], "the post-hoc step ran on its own stage"
    assert all(not stage["post"] for stage in metrics["stages"][:-1]), "and on no other"
    ce = run(tmp_path, "ce", "ce")
    assert ce["stages"][0]["reused"] and ce["stages"][0]["key"] == metrics["stages"][0]["key"]
    np.testing.assert_array_equal(logits_of(tmp_path, "ce"), ce_alone)


def test_post_stage_without_a_declaring_stage_is_refused(tmp_path):
    plugin = POSTHOC_PLUGIN.replace('Stage("adjust", trainable="none", post="adjust")',
                                    'Stage("adjust", trainable="none")')
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "undeclared.py").write_text(plugin.replace("posthoc-adjust", "undeclared-adjust"))
    result = invoke("run", "--method", "undeclared-adjust", *FAST, "--results", tmp_path / "out", "--plugins", folder)
    assert result.exit_code != 0 and "declares a post-hoc step" in result.output
    assert not (tmp_path / "out").exists()


def cli(*args, cwd: Path) -> dict:
    """A fresh process per run, as a user edits a file between two commands."""
    env = {**os.environ, "COLUMNS": "300"}
    done = subprocess.run([sys.executable, "-m", "ltbench", "run", *map(str, args), *FAST], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    name = args[args.index("--run-name") + 1]
    return json.loads((cwd / "out" / "runs" / name / "metrics.json").read_text())["stages"][0]


def test_editing_a_method_file_retrains_its_stage_and_retrain_forces_it(tmp_path):
    plugin = tmp_path / "plugins" / "scaled_ce.py"
    plugin.parent.mkdir()
    plugin.write_text(EDITABLE_PLUGIN)
    common = ("--method", "scaled-ce", "--plugins", plugin.parent, "--results", "out")
    first = cli(*common, "--run-name", "a", cwd=tmp_path)
    again = cli(*common, "--run-name", "b", cwd=tmp_path)
    assert not first["reused"] and again["reused"] and again["key"] == first["key"]
    plugin.write_text(EDITABLE_PLUGIN.replace("SCALE = 1.0", "SCALE = 0.5"))
    edited = cli(*common, "--run-name", "c", cwd=tmp_path)
    assert not edited["reused"] and edited["key"] != first["key"]
    forced = cli(*common, "--run-name", "d", "--retrain", cwd=tmp_path)
    assert not forced["reused"] and forced["key"] == edited["key"]


def write_cifar_folders(root: Path, seed: int, per_class: int = 12) -> None:
    rng = np.random.default_rng(seed)
    for split, count in (("train", per_class), ("test", 3)):
        for c in range(10):
            folder = root / "cifar10" / split / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(count):
                Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i}.png")


def test_another_copy_of_the_data_with_the_same_counts_retrains(tmp_path):
    for seed in (0, 1):
        write_cifar_folders(tmp_path / f"root{seed}", seed)
    args = ("--dataset", "cifar10-lt", "--imbalance", "2", "--val-per-class", "2")
    first = run(tmp_path / "out", "ce", "root0", *args, "--data-root", tmp_path / "root0")["stages"][0]
    same = run(tmp_path / "out", "ce", "root0-again", *args, "--data-root", tmp_path / "root0")["stages"][0]
    other = run(tmp_path / "out", "ce", "root1", *args, "--data-root", tmp_path / "root1")["stages"][0]
    assert same["reused"] and same["key"] == first["key"]
    assert not other["reused"] and other["key"] != first["key"]


def test_a_core_code_change_makes_new_keys_but_the_same_numbers(tmp_path, monkeypatch):
    """Stage keys hash the core's code (a reused artifact is what this code trains), but a stage's random
    streams are seeded without it: a refactor or a comment in the core gives bit-identical numbers, so
    committed results stay reproducible across versions."""
    from ltbench import fingerprint

    first = run(tmp_path / "a", "ce", "before")
    monkeypatch.setattr(fingerprint, "core_code", lambda: "another-version-of-the-core")
    second = run(tmp_path / "b", "ce", "after")
    keys = [json.loads((tmp_path / d / "runs" / n / "config.json").read_text())["stages"][0]["key"]
            for d, n in (("a", "before"), ("b", "after"))]
    assert keys[0] != keys[1]
    assert np.array_equal(logits_of(tmp_path / "a", "before"), logits_of(tmp_path / "b", "after"))
    assert first["acc"] == second["acc"]


def test_mislas_reuses_mixups_stage_1_and_matches_a_fresh_mislas_bit_for_bit(tmp_path):
    """MiSLAS' stage 1 is mixup's, trained by mixup's hooks on the same model: one artifact serves both, and
    the reused run is what a fresh one trains."""
    fresh = run(tmp_path / "fresh", "mislas", "mislas")["stages"]
    assert not fresh[0]["reused"]
    mixup = run(tmp_path / "shared", "mixup", "mixup")["stages"]
    reused = run(tmp_path / "shared", "mislas", "mislas")["stages"]
    assert reused[0]["reused"] and reused[0]["key"] == mixup[0]["key"] == fresh[0]["key"]
    assert not reused[1]["reused"] and reused[1]["key"] == fresh[1]["key"]
    np.testing.assert_array_equal(logits_of(tmp_path / "shared", "mislas"), logits_of(tmp_path / "fresh", "mislas"))


# --- what the code hash of a stage key covers ----------------------------------------------------------

KEY_PROBE = """
import json, sys
import ltbench
from ltbench.config import RunConfig
from ltbench.engine.plan import plan_run

assert ltbench.__file__.startswith(sys.argv[1]), ltbench.__file__  # the package under test, not another copy
plans = {}
for method in sys.argv[2].split(","):
    plan = plan_run(RunConfig(method=method, dataset="digits-lt", recipe="smoke", device="cpu", precision="fp32",
                              plugins=sys.argv[3:]))
    plans[method] = {"keys": plan.keys, "seeds": plan.seeds}
print(json.dumps(plans))
"""
KEYED_METHODS = ("ce", "crt", "posthoc-la", "dasl")


def planned(root: Path, methods=KEYED_METHODS, plugins=()) -> dict:
    """Stage keys and seeds of ``methods`` (digits-lt, smoke recipe) planned by a fresh process that imports
    ltbench from ``root``, as a user's next command would after an edit."""
    done = subprocess.run([sys.executable, "-c", KEY_PROBE, str(root), ",".join(methods), *map(str, plugins)],
                          cwd=root, env={**os.environ, "PYTHONPATH": str(root)}, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def copy_package(root: Path) -> Path:
    """A copy of the package as a wheel lays it out (methods/ inside it as ltbench/methods), to edit."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.npz")
    shutil.copytree(REPO / "ltbench", root / "ltbench", ignore=ignore)
    shutil.copytree(REPO / "methods", root / "ltbench" / "methods", ignore=ignore)
    return root


@pytest.fixture
def package(tmp_path) -> Path:
    return copy_package(tmp_path / "site")


@pytest.fixture(scope="module")
def package_keys(tmp_path_factory) -> dict:
    """The keys of an unedited copy (the code hashes name file contents, never where the files are)."""
    return planned(copy_package(tmp_path_factory.mktemp("pristine") / "site"))


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{path} no longer holds {old!r}: pick another edit"
    path.write_text(text.replace(old, new, 1))


def test_run_configuration_cli_and_help_text_are_in_no_stage_key(package, package_keys):
    """config.py holds RunConfig, setting metadata and ranges and cli.py the commands and their help: editing
    them computes nothing different, so no stored stage may be invalidated by it (it was: config.py was hashed)."""
    config, cli = package / "ltbench" / "config.py", package / "ltbench" / "cli.py"
    edit(config, "the imbalance factor is the largest class count over the smallest",
         "IF: the largest class count over the smallest")
    edit(config, "def check_settings(", "# a comment\ndef check_settings(")
    edit(cli, 'help="Method name (see `ltbench methods`)."', 'help="The method (`ltbench methods` lists them)."')
    cli.write_text(cli.read_text() + "# a comment\n")
    assert planned(package) == package_keys


@pytest.mark.parametrize("file", ["recipes.py", "engine/loop.py"])
def test_the_numerics_are_in_every_stage_key_but_in_no_seed(package, package_keys, file):
    """The stage and recipe math (schedules, presets, lr scaling) and the loop compute every stage: a comment
    there is a new key for every stage (what a stored artifact is, is then certain), never another seed."""
    path = package / "ltbench" / file
    path.write_text(path.read_text() + "# a comment\n")
    edited = planned(package)
    for method, plan in edited.items():
        assert not set(plan["keys"]) & set(package_keys[method]["keys"]), method
        assert plan["seeds"] == package_keys[method]["seeds"], method


def test_a_helper_one_method_file_imports_from_another_is_in_its_key(package, package_keys):
    """posthoc_la.py computes its adjustment with la_loss.log_prior: editing la_loss.py is a new key for
    posthoc-la's own stage, and leaves the shared CE stage and the methods that do not import it alone."""
    edit(package / "ltbench" / "methods" / "la_loss.py", "def log_prior(", "# a comment\ndef log_prior(")
    edited = planned(package)
    assert edited["posthoc-la"]["keys"][0] == package_keys["posthoc-la"]["keys"][0]  # the shared CE stage
    assert edited["posthoc-la"]["keys"][1] != package_keys["posthoc-la"]["keys"][1]
    assert edited["posthoc-la"]["seeds"] == package_keys["posthoc-la"]["seeds"]
    assert {m: edited[m] for m in ("ce", "crt", "dasl")} == {m: package_keys[m] for m in ("ce", "crt", "dasl")}


SPLIT_PLUGIN = {
    "my.py": """
from torch.nn import functional as F

import cos_head
from ltbench import Method, register_method
from tail_scale import scale


@register_method("two-file-plugin", summary="cross-entropy scaled by two helper files of its folder (tests)")
class TwoFiles(Method):
    def stages(self, recipe):
        return [recipe.representation(loss="two-file-plugin")]

    def loss(self, out, batch, state):
        return cos_head.SCALE * scale(F.cross_entropy(out.logits.float(), batch["y"]))
""",
    "cos_head.py": "SCALE = 1.0\n",  # sorted before my.py: loaded first
    "tail_scale.py": "def scale(loss):\n    return 1.0 * loss\n",  # sorted after my.py: imported by it first
}


def test_a_plugin_split_over_files_loads_and_each_helper_is_in_its_key(tmp_path):
    """A plugin file imports its folder's other files as Python runs a script (`import cos_head`), and an edit
    of any of them is a new key for the plugin's stage; the folder is left as it was (no __pycache__)."""
    folder = tmp_path / "plugins"
    folder.mkdir()
    for name, text in SPLIT_PLUGIN.items():
        (folder / name).write_text(text)
    first = planned(REPO, ["two-file-plugin", "ce"], [folder])["two-file-plugin"]["keys"]
    keys = [first[0]]
    for name, old, new in (("cos_head.py", "SCALE = 1.0", "SCALE = 0.5"), ("tail_scale.py", "1.0 *", "0.5 *")):
        edit(folder / name, old, new)
        keys.append(planned(REPO, ["two-file-plugin"], [folder])["two-file-plugin"]["keys"][0])
    assert len(set(keys)) == 3, keys
    assert sorted(p.name for p in folder.iterdir()) == sorted(SPLIT_PLUGIN)
