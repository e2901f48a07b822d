"""A table of bad inputs through the CLI (`run`, `sweep`, `table`, `plot`): each ends with its exit code and
ONE clear line on stderr (no traceback) that names the problem and the fix: an error (exit code != 0), or,
where a command can go on without one damaged run folder, a warning. Nothing on disk changes but what a case
declares (a run stopped mid-training keeps its folder and checkpoints), and nothing written before is lost.
docs/reliability.md gives the figures of this table."""
import errno
import fnmatch
import gzip
import os
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np
import pytest
import torch
from PIL import Image

from ltbench import Method, register_dataset
from ltbench.data.base import Augment
from ltbench.data.sources import ImageNetLT
from ltbench.engine.checkpoint import load_state
from tests.helpers import FAST, invoke, png_header, read_run

BROKEN_PLUGIN = """
from ltbench import Method, register_method

raise RuntimeError("boom while importing")


@register_method("exploding")
class Exploding(Method):
    def stages(self, recipe):
        return [recipe.representation()]
"""


@register_dataset("tiny-lists-test", summary="4 x 4 tiny images named by split lists (tests of the file path)")
class TinyLists(ImageNetLT):
    """The published-split-list layout (ImageNet-LT's own code path) at 16 x 16, so a test trains in seconds."""

    num_classes, image_size = 2, 16
    data_dir, list_prefix = "Tiny", "Tiny"
    default_backbone, default_recipe = "resnet20", "smoke"
    augment = Augment()


def snapshot(root: Path) -> dict:
    """Every file and folder under root with its size and mtime: any write shows up."""
    return {str(p.relative_to(root)): (p.is_dir(), p.stat().st_size if p.is_file() else 0, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*"))}


def _image(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(path)


def _split_lists(folder: Path, prefix: str, train: list[str], other: list[str] | None = None) -> None:
    """<folder>/<prefix>_{train,val,test}.txt; val and test list ``other`` (default: the first train line)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{prefix}_train.txt").write_text("".join(f"{line}\n" for line in train))
    for split in ("val", "test"):
        (folder / f"{prefix}_{split}.txt").write_text("".join(f"{line}\n" for line in other or train[:1]))


def _results_with(root: Path, done: Path, name: str, damage: Callable[[Path], None] | None = None) -> Path:
    """A results folder holding a copy of the finished run 'done' and, if ``damage``, a damaged copy 'broken'."""
    results = root / name
    shutil.copytree(done, results / "runs" / "done")
    if damage is not None:
        shutil.copytree(done, results / "runs" / "broken")
        damage(results / "runs" / "broken")
    return results


class _Payload:
    def __init__(self, call, *args):
        self.call, self.args = call, args

    def __reduce__(self):
        return self.call, self.args


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> dict:
    """A results folder with a finished run ('done') and an unfinished one ('half'), plus bad data folders,
    damaged results folders and bad suite files."""
    import json
    import pickle

    root = tmp_path_factory.mktemp("bad-input")
    out = root / "results"
    result = invoke("run", "--method", "ce", *FAST, "--epochs", "1", "--results", out, "--run-name", "done")
    assert result.exit_code == 0, result.output
    shutil.copytree(out / "runs" / "done", out / "runs" / "half")
    (out / "runs" / "half" / "metrics.json").unlink()  # stopped before it finished, no checkpoint: resumable
    done = out / "runs" / "done"
    w = {"root": root, "out": out}

    w["empty"] = root / "empty-data"
    w["empty"].mkdir()
    w["imagenet"] = root / "imagenet-lt"  # the published-list layout with one broken line
    _image(w["imagenet"] / "train" / "n01440764" / "a.JPEG", 10)
    _split_lists(w["imagenet"], "ImageNet_LT", ["train/n01440764/a.JPEG 0", "train/n01440764/b.JPEG zero"])
    # split lists that leave the data root, and listed images that are missing or not files
    for name, second in [("escape-absolute", f"{root / 'secret.JPEG'} 0"), ("escape-dotdot", "../secret.JPEG 0"),
                         ("missing-image", "train/n01440764/b.JPEG 0"), ("listed-folder", "train/n01440764/c 0")]:
        w[name] = root / name
        _image(w[name] / "train" / "n01440764" / "a.JPEG", 10)
        (w[name] / "train" / "n01440764" / "c").mkdir()
        _split_lists(w[name], "ImageNet_LT", ["train/n01440764/a.JPEG 0", second])
    _image(root / "secret.JPEG", 99)
    # a CIFAR python folder whose first batch runs code when plain pickle reads it
    w["crafted"] = root / "crafted-cifar"
    batches = w["crafted"] / "cifar-10-batches-py"
    batches.mkdir(parents=True)
    for name in ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"):
        (batches / name).write_bytes(b"")
    w["marker"] = root / "pwned"
    (batches / "data_batch_1").write_bytes(pickle.dumps(
        _Payload(exec, f"open({str(w['marker'])!r}, 'w').close()"), protocol=2))
    # a tiny split-list data set for the cases that fail mid-training, with its own results folder
    w["tiny"] = root / "tiny"
    train = []
    for label in (0, 1):
        for i in range(6):
            _image(w["tiny"] / "train" / f"c{label}" / f"{i}.png", 60 + 120 * label)
            train.append(f"train/c{label}/{i}.png {label}")
    for label in (0, 1):
        _image(w["tiny"] / "val" / f"c{label}" / "0.png", 60 + 120 * label)
    _split_lists(w["tiny"], "Tiny", train, [f"val/c{label}/0.png {label}" for label in (0, 1)])
    w["train_out"] = root / "train-results"
    # results folders with one damaged run next to a good one
    w["good"] = _results_with(root, done, "results-good")
    w["array_metrics"] = _results_with(root, done, "results-array", lambda run: (run / "metrics.json").write_text("[]"))

    def string_accuracy(run: Path) -> None:
        metrics = json.loads((run / "metrics.json").read_text())
        (run / "metrics.json").write_text(json.dumps({**metrics, "acc": "high"}))

    w["string_metric"] = _results_with(root, done, "results-string", string_accuracy)

    w["truncated_logits"] = _results_with(root, done, "results-truncated")
    logits = w["truncated_logits"] / "runs" / "done" / "test_logits.npz"
    logits.write_bytes(logits.read_bytes()[:100])  # a copy cut short
    w["readonly"] = root / "read-only"
    w["readonly"].mkdir()
    w["readonly"].chmod(0o555)
    # suite files
    suites = root / "suites"
    suites.mkdir()
    for name, text in [("latin1", b'name = "caf\xe9"\nmethods = ["ce"]\n'),
                       ("empty_grid", b'methods = ["ce"]\nseeds = []\n'),
                       ("imbalance_range", b'methods = ["ce"]\nimbalance = [100, 0.5]\n'),
                       ("option_range", b'methods = ["label-smoothing"]\n[options.label-smoothing]\nepsilon = 2\n'),
                       ("variant_range", b'methods = ["ce"]\n[[variants]]\nname = "tau5"\nmethod = "tau-norm"\n'
                                         b'options = { tau = 5.0 }\n'),
                       ("variant_options", b'[[variants]]\nname = "v"\nmethod = "ce"\noptions = 5\n'),
                       ("variant_name", b'[[variants]]\nname = 5\nmethod = "ce"\n'),
                       ("variant_method", b'[[variants]]\nname = "v"\nmethod = ["ce"]\n'),
                       ("deeply_nested", b'methods = ["ce"]\nseeds = ' + b"[" * 50000 + b"]" * 50000 + b"\n"),
                       ("name_dotdot", b'name = "../../outside"\nmethods = ["ce"]\n')]:
        w[f"suite_{name}"] = suites / f"{name}.toml"
        w[f"suite_{name}"].write_bytes(text)

    # CIFAR image folders holding a PNG whose header claims 30000 x 30000 pixels (a decompression bomb)
    w["bomb"] = root / "bomb"
    for split in ("train", "test"):
        for c in range(10):
            (w["bomb"] / "cifar10" / split / f"class{c}").mkdir(parents=True)
    (w["bomb"] / "cifar10" / "train" / "class0" / "0.png").write_bytes(png_header(30000, 30000))
    # split lists whose paths stay under the image root, where a symbolic link leads out of it
    w["escape-symlink"] = root / "escape-symlink"
    _image(w["escape-symlink"] / "train" / "n01440764" / "a.JPEG", 10)
    (w["escape-symlink"] / "train" / "n01440764" / "b.JPEG").symlink_to(root / "secret.JPEG")
    _split_lists(w["escape-symlink"], "ImageNet_LT", ["train/n01440764/a.JPEG 0", "train/n01440764/b.JPEG 0"])
    # MNIST whose train images .gz is a gzip bomb: a valid header, then 8 MiB of zeros
    w["mnist-bomb"] = root / "mnist-bomb"
    raw = w["mnist-bomb"] / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, n in (("train", 30), ("t10k", 10)):
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(bytes([0, 0, 8, 1]) + n.to_bytes(4, "big") + bytes(n))
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(bytes([0, 0, 8, 3]) + np.asarray([n, 28, 28], ">u4").tobytes()
                                                          + bytes(n * 28 * 28))
    with gzip.open(raw / "train-images-idx3-ubyte.gz", "wb") as f:
        f.write((raw / "train-images-idx3-ubyte").read_bytes() + bytes(8 * 2**20))
    (raw / "train-images-idx3-ubyte").unlink()

    w["plugins"] = root / "plugins"
    w["plugins"].mkdir()
    (w["plugins"] / "exploding.py").write_text(BROKEN_PLUGIN)
    w["file"] = root / "a-file"
    w["file"].write_text("a regular file, so nothing can be created under it\n")
    w["offline"] = Path(tempfile.mkdtemp(prefix="ltbench-offline-")) / "data"  # outside root: its parent is checked
    return w


# patches (monkeypatch, workspace) applied while a case runs ----------------------------------------------
def _disk_full_at_second_checkpoint(monkeypatch, workspace) -> None:
    real, calls = torch.save, []

    def save(obj, f, *args, **kwargs):
        if "checkpoints" in str(getattr(f, "name", f)):
            calls.append(f)
            if len(calls) == 2:
                raise OSError(errno.ENOSPC, "No space left on device")
        return real(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)


def _image_damaged_after_first_epoch(monkeypatch, workspace) -> None:
    """The file changes under a running run (a failing disk, a sync job): epoch 2 cannot decode it."""

    def on_epoch_end(self, state):
        if state.epoch == 0:
            (workspace["tiny"] / "train" / "c1" / "4.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")

    monkeypatch.setattr(Method, "on_epoch_end", on_epoch_end)


def _read_only_even_for_root(monkeypatch, workspace) -> None:
    """The folder is mode 0555; root ignores modes, so for root the kernel's answer is played back."""
    if os.geteuid() != 0:
        return
    real = tempfile.mkstemp

    def mkstemp(*args, dir=None, **kwargs):
        if dir is not None and Path(dir).resolve() == workspace["readonly"].resolve():
            raise PermissionError(errno.EACCES, "Permission denied", str(dir))
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)


def _offline(monkeypatch, workspace) -> None:
    def urlopen(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)


# checks of what a case may leave behind ------------------------------------------------------------------
def _checkpoint_of_epoch_1_kept(workspace, name: str) -> None:
    run = workspace["train_out"] / "runs" / name
    checkpoint = load_state(run / "checkpoints" / "last.pt")
    assert (checkpoint["stage_index"], checkpoint["epoch"], checkpoint["step"]) == (0, 1, 0)
    assert not (run / "metrics.json").exists() and not list(run.rglob("*.tmp"))
    first_epoch = (run / "epochs.jsonl").read_text().splitlines(keepends=True)[0]
    assert checkpoint["epochs_log_bytes"] == len(first_epoch.encode())  # a resume cuts the log back to here


def _checkpoint_kept_and_the_run_resumes(workspace, name: str) -> None:
    """Space freed (the patch now lets checkpoints through): --resume finishes the run from epoch 1's."""
    _checkpoint_of_epoch_1_kept(workspace, name)
    result = invoke("run", "-q", "--results", workspace["train_out"], "--run-name", name, "--resume")
    assert result.exit_code == 0, result.output
    run = workspace["train_out"] / "runs" / name
    assert (run / "metrics.json").is_file() and len((run / "epochs.jsonl").read_text().splitlines()) == 2


def _no_marker(workspace, name: str) -> None:
    assert not workspace["marker"].exists()


def _no_download_folders(workspace, name: str) -> None:
    assert not workspace["offline"].exists() and not any(workspace["offline"].parent.iterdir())


class Case(NamedTuple):
    """One bad input: the command line ({name} filled from the workspace; `run` cases get FAST, --out and
    --method crt unless they give them), the words its one stderr line must contain, the exit code, and
    what may change on disk (glob patterns relative to the workspace root; nothing else may)."""

    id: str
    args: list
    words: list
    code: int = 2
    command: str = "run"
    warning: bool = False  # the line is a warning and the command goes on (exit code 0)
    patch: Callable | None = None
    may_change: tuple = ()
    check: Callable | None = None


STOPPED_RUN = ("train-results", "train-results/runs", "train-results/runs/{name}", "train-results/runs/{name}/*",
               "train-results/stages", "train-results/stages/*", "tiny/train/c1", "tiny/train/c1/4.png")
CASES = [
    # names, data and layouts
    Case("unknown-method", ["--method", "crtt"], ["unknown method 'crtt'", "did you mean 'crt'"]),
    Case("unknown-dataset", ["--dataset", "cifar10lt"], ["unknown dataset 'cifar10lt'", "'cifar10-lt'"]),
    Case("unknown-backbone", ["--backbone", "resnet33"], ["unknown backbone 'resnet33'", "did you mean", "resnet32"]),
    Case("missing-data", ["--dataset", "cifar10-lt", "--data-root", "{empty}"],
         ["dataset 'cifar10-lt' not found under {empty}", "cifar-10-batches-py", "--data-root"]),
    Case("download-offline", ["--dataset", "cifar10-lt", "--data-root", "{offline}", "--download"],
         ["--download of 'cifar10-lt' into {offline} failed", "Temporary failure in name resolution",
          "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "without --download"],
         patch=_offline, check=_no_download_folders),
    Case("malformed-split-list", ["--dataset", "imagenet-lt", "--data-root", "{imagenet}"],
         ["{imagenet}/ImageNet_LT_train.txt:2:", "expected '<relative/path> <integer label>'"]),
    # hostile data
    Case("crafted-pickle", ["--dataset", "cifar10-lt", "--data-root", "{crafted}"],
         ["{crafted}/cifar-10-batches-py/data_batch_1: refused to unpickle", "exec, which a CIFAR batch never holds"], check=_no_marker),
    Case("split-list-absolute-path", ["--dataset", "imagenet-lt", "--data-root", "{escape-absolute}"],
         ["{escape-absolute}/ImageNet_LT_train.txt:2: '{root}/secret.JPEG' leaves the data root",
          "LTBENCH_ALLOW_OUTSIDE_ROOT=1"]),
    Case("split-list-dotdot", ["--dataset", "imagenet-lt", "--data-root", "{escape-dotdot}"],
         ["{escape-dotdot}/ImageNet_LT_train.txt:2: '../secret.JPEG' leaves the data root"]),
    Case("split-list-symlink-out", ["--dataset", "imagenet-lt", "--data-root", "{escape-symlink}"],
         ["image {escape-symlink}/train/n01440764/b.JPEG (listed at {escape-symlink}/ImageNet_LT_train.txt:2) is a "
          "symbolic link", "leads to {root}/secret.JPEG, outside the image root", "LTBENCH_ALLOW_OUTSIDE_ROOT=1"]),
    Case("decompression-bomb", ["--dataset", "cifar10-lt", "--data-root", "{bomb}"],
         ["image {bomb}/cifar10/train/class0/0.png claims 900,000,000 pixels, over the limit of 89,478,485 pixels",
          "decompression bomb"]),
    Case("mnist-gzip-bomb", ["--dataset", "mnist-lt", "--data-root", "{mnist-bomb}"],
         ["{mnist-bomb}/MNIST/raw/train-images-idx3-ubyte.gz: holds more than its header announces"]),
    # bad data found before training, or during it
    Case("listed-image-missing", ["--dataset", "imagenet-lt", "--data-root", "{missing-image}"],
         ["image {missing-image}/train/n01440764/b.JPEG (listed at {missing-image}/ImageNet_LT_train.txt:2) "
          "does not exist"]),
    Case("listed-image-is-a-folder", ["--dataset", "imagenet-lt", "--data-root", "{listed-folder}"],
         ["image {listed-folder}/train/n01440764/c (listed at {listed-folder}/ImageNet_LT_train.txt:2) is not a file"]),
    Case("image-undecodable-mid-training",
         ["--method", "ce", "--dataset", "tiny-lists-test", "--data-root", "{tiny}", "--epochs", "2",
          "--run-name", "image-undecodable-mid-training", "--results", "{train_out}"],
         ["cannot decode image {tiny}/train/c1/4.png, listed at {tiny}/Tiny_train.txt:11",
          "replace the file or remove its line"],
         patch=_image_damaged_after_first_epoch, may_change=STOPPED_RUN, check=_checkpoint_of_epoch_1_kept),
    Case("disk-full-at-checkpoint",
         ["--method", "ce", "--epochs", "2", "--run-name", "disk-full-at-checkpoint", "--results", "{train_out}"],
         ["cannot write {train_out}/runs/disk-full-at-checkpoint/checkpoints/last.pt (No space left on device)",
          "free some space", "the last checkpoint {train_out}/runs/disk-full-at-checkpoint/checkpoints/last.pt is kept",
          "continue with: ltbench run --results {train_out} --run-name disk-full-at-checkpoint --resume"],
         patch=_disk_full_at_second_checkpoint, may_change=STOPPED_RUN, check=_checkpoint_kept_and_the_run_resumes),
    # run settings
    Case("imbalance-below-1", ["--imbalance", "0.5"], ["--imbalance 0.5: must be >= 1", "largest class count over"]),
    Case("imbalance-nan", ["--imbalance", "nan"], ["--imbalance nan: must be finite and >= 1"]),
    Case("imbalance-inf", ["--imbalance", "inf"], ["--imbalance inf: must be finite and >= 1"]),
    Case("imbalance-empties-a-class", ["--imbalance", "1e9"],
         ["imbalance factor 1e+09 leaves class", "without a training image", "can be at most 144"]),
    Case("lr-nan", ["--lr", "nan"], ["--lr nan: must be finite and > 0"]),
    Case("lr-inf", ["--lr", "inf"], ["--lr inf: must be finite and > 0"]),
    Case("zero-epochs", ["--epochs", "0"], ["--epochs 0: must be >= 1", "every stage must train"]),
    Case("negative-epochs", ["--epochs", "-1"], ["--epochs -1: must be >= 1"]),
    Case("zero-batch", ["--batch-size", "0"], ["--batch-size 0: must be >= 1"]),
    Case("batch-larger-than-train-set", ["--method", "ce", "--batch-size", "1000000"],
         ["--batch-size 1000000 is larger than the training set (483 images of digits-lt)",
          "--batch-size 483 or less"]),
    Case("data-root-of-no-user", ["--data-root", "~nouser-ltbench-test/data"],
         ["--data-root ~nouser-ltbench-test/data: cannot expand '~nouser-ltbench-test': there is no user "
          "'nouser-ltbench-test'", "write the folder out in full"]),
    Case("results-of-no-user", ["--results", "~nouser-ltbench-test"],
         ["--results ~nouser-ltbench-test: cannot expand '~nouser-ltbench-test'"]),
    Case("bad-profile", ["--profile", "linear"], ["profile 'linear'", "exp or step"]),
    Case("unknown-recipe", ["--recipe", "smok"], ["unknown recipe 'smok'", "did you mean 'smoke'"]),
    Case("unknown-precision", ["--precision", "fp8"], ["unknown precision 'fp8'"]),
    Case("fp16-on-cpu", ["--precision", "fp16"], ["fp16 needs a CUDA GPU"]),
    Case("unknown-device", ["--device", "tpu"], ["unknown device 'tpu'"]),
    Case("nproc-zero", ["--nproc", "0"], ["--nproc must be >= 1"]),
    # method options
    Case("unknown-option-key", ["-o", "beta=0.3"], ["method 'crt' has no option beta"]),
    Case("option-without-value", ["-o", "beta"], ["must look like KEY=VALUE"]),
    Case("bad-option-choice", ["--method", "crt", "-o", "bn=maybe"], ["bn='maybe'", "choose one of"]),
    Case("bad-option-type", ["--method", "label-smoothing", "-o", "epsilon=lots"], ["epsilon='lots'", "expected a float"]),
    Case("epsilon-out-of-range", ["--method", "label-smoothing", "-o", "epsilon=2"],
         ["method 'label-smoothing': option epsilon=2.0 must be in [0, 1)"]),
    Case("tau-out-of-range", ["--method", "tau-norm", "-o", "tau=5"],
         ["method 'tau-norm': option tau=5.0 must be in [0, 2] or -1"]),
    Case("grid-step-zero", ["--method", "tau-norm", "-o", "grid_step=0"],
         ["method 'tau-norm': option grid_step=0.0 must be in [0.001, 2]"]),
    Case("option-nan", ["--method", "ncm", "-o", "scale=nan"], ["option scale=nan: expected a number"]),
    Case("option-absurd-width", ["--method", "dasl", "-o", "aux_width=1000000000"],
         ["method 'dasl': option aux_width=1000000000 must be in [0, 2048]", "`ltbench methods dasl`"]),
    Case("option-absurd-scale", ["--method", "ncm", "-o", "scale=1e308"],
         ["method 'ncm': option scale=1e+308 must be in (0, 1000] or -1"]),
    Case("plugin-raises", ["--method", "exploding", "--plugins", "{plugins}"],
         ["unknown method 'exploding'", "{plugins}/exploding.py failed to import", "RuntimeError: boom while importing"]),
    # run folders and names
    Case("run-name-with-slash", ["--run-name", "a/b"], ["one folder name"]),
    Case("run-name-too-long", ["--run-name", "r" * 300], ["--run-name is 300 bytes long", "at most 255"]),
    Case("unwritable-out", ["--results", "{file}/results"], ["output folder {file}/results is not writable", "--results"]),
    Case("run-name-in-use", ["--run-name", "done"], ["run 'done' already exists", "--run-name", "--resume"]),
    Case("resume-without-name", ["--resume"], ["--resume needs --run-name"]),
    Case("resume-nothing", ["--resume", "--run-name", "hlf"], ["nothing to resume", "no run 'hlf'", "did you mean 'half'"]),
    Case("resume-finished", ["--resume", "--run-name", "done"], ["nothing to resume", "already finished"]),
    Case("resume-other-settings", ["--resume", "--run-name", "half", "--epochs", "5"],
         ["epochs 5 (the run has 1)", "keeps its settings"]),
    Case("resume-other-method", ["--resume", "--run-name", "half", "--method", "crt"], ["method 'crt' (the run has 'ce')"]),
    # suite files
    Case("suite-not-utf8", ["{suite_latin1}", "--results", "{out}"], ["{suite_latin1}:1: not UTF-8 text (byte 0xe9", "save the suite file as UTF-8"],
         command="sweep"),
    Case("suite-empty-grid", ["{suite_empty_grid}", "--results", "{out}"], ["{suite_empty_grid}: 'seeds' is an empty list", "no runs"],
         command="sweep"),
    Case("suite-value-out-of-range", ["{suite_imbalance_range}", "--results", "{out}"], ["{suite_imbalance_range}: 'imbalance' = 0.5: must be >= 1"],
         command="sweep"),
    Case("suite-option-out-of-range", ["{suite_option_range}", "--results", "{out}"],
         ["{suite_option_range}: [options.label-smoothing]: method 'label-smoothing': option epsilon=2.0 must be in [0, 1)"],
         command="sweep"),
    Case("suite-variant-out-of-range", ["{suite_variant_range}", "--results", "{out}"],
         ["{suite_variant_range}: [[variants]] 'tau5': method 'tau-norm': option tau=5.0 must be in [0, 2] or -1"],
         command="sweep"),
    Case("suite-variant-options-not-a-table", ["{suite_variant_options}", "--results", "{out}"],
         ["{suite_variant_options}: [[variants]] number 1: 'options' must be a table, got 5"], command="sweep"),
    Case("suite-variant-name-not-a-string", ["{suite_variant_name}", "--results", "{out}"],
         ["{suite_variant_name}: [[variants]] number 1: 'name' must be a string, got 5"], command="sweep"),
    Case("suite-variant-method-a-list", ["{suite_variant_method}", "--results", "{out}"],
         ["{suite_variant_method}: [[variants]] number 1: 'method' must be a string, got ['ce']"], command="sweep"),
    Case("suite-nested-50000-deep", ["{suite_deeply_nested}", "--results", "{out}"],
         ["{suite_deeply_nested}: arrays or tables nested too deeply to read"], command="sweep"),
    Case("suite-name-leaves-results", ["{suite_name_dotdot}", "--results", "{out}"],
         ["{suite_name_dotdot}: 'name' = '../../outside' must be one folder name"], command="sweep"),
    # tables and plots of damaged results folders
    Case("table-metrics-array", ["--results", "{array_metrics}"],
         ["skipped {array_metrics}/runs/broken: {array_metrics}/runs/broken/metrics.json holds an array, not a JSON "
          "object"], code=0, command="table", warning=True),
    Case("table-metric-string", ["--results", "{string_metric}"],
         ["skipped {string_metric}/runs/broken: {string_metric}/runs/broken/metrics.json has 'acc' = 'high' "
          "(a number expected)"], code=0, command="table", warning=True),
    Case("plot-truncated-logits", ["reliability", "--results", "{truncated_logits}"],
         ["{truncated_logits}/runs/done/test_logits.npz: cannot read test logits (BadZipFile"], command="plot"),
    Case("table-out-read-only", ["--results", "{good}", "--out", "{readonly}/table.md"],
         ["cannot write {readonly}/table.md (Permission denied)", "not writable", "--out"], command="table",
         patch=_read_only_even_for_root),
    Case("plot-out-read-only", ["per-class", "--results", "{good}", "--out", "{readonly}/per-class.png"],
         ["cannot write {readonly}/per-class.png (Permission denied)", "not writable", "--out"], command="plot",
         patch=_read_only_even_for_root),
]


def _fill(text: str, workspace: dict) -> str:
    return text.format(**{k: str(v) for k, v in workspace.items()})


def _changed(before: dict, after: dict, allowed: list[str]) -> list[str]:
    differ = {key for key in before.keys() | after.keys() if before.get(key) != after.get(key)}
    return sorted(key for key in differ if not any(fnmatch.fnmatch(key, pattern) for pattern in allowed))


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_clear_line_and_changes_nothing(workspace, monkeypatch, case):
    args = [_fill(a, workspace) for a in case.args]
    if case.command == "run":
        if "--results" not in args:
            args += ["--results", str(workspace["out"])]
        if "--method" not in args and "--resume" not in args:  # a resumed run takes its method from config.json
            args = ["--method", "crt", *args]
        defaults = [a for a in FAST if a not in ("smoke", "--recipe")] if "--recipe" in args else FAST
        if "--precision" in args:
            defaults = [a for a in defaults if a not in ("--precision", "fp32")]
        args = [*defaults, *args]
    if case.patch is not None:
        case.patch(monkeypatch, workspace)
    before = snapshot(workspace["root"])
    result = invoke(case.command, *args)
    assert result.exit_code == case.code, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("warning: " if case.warning else "error: "), lines[0]
    for word in case.words:
        assert _fill(word, workspace) in lines[0], (word, lines[0])
    # not a file or folder created, touched or removed, but what the case declares
    assert _changed(before, snapshot(workspace["root"]), [p.format(name=case.id) for p in case.may_change]) == []
    if case.check is not None:
        case.check(workspace, case.id)


def test_resume_of_a_run_that_is_still_running_is_refused(workspace):
    from ltbench.engine.locks import StageLock

    live = StageLock(workspace["out"] / "runs" / "half" / ".lock", owner="half")  # this live process runs it
    assert live.try_acquire()
    try:
        before = snapshot(workspace["root"])
        result = invoke("run", "--results", workspace["out"], "--run-name", "half", "--resume", "-q")
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
    result = invoke("run", "--results", workspace["out"], *args)
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
                    "--results", tmp_path, "--run-name", "ok")
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
    proc = subprocess.run([sys.executable, "-m", "ltbench", "run", *FAST, *args, "--results", str(workspace["out"])],
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
        with pytest.raises(ConfigError, match=rf"option {key}=.* must be (finite and )?{re.escape(allowed)}"):
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


def test_a_quoted_tilde_is_expanded_as_a_shell_would(workspace, tmp_path):
    """`--results '~'` and `--data-root '~/data'` (quoted: the shell leaves them alone) mean the home folder, in
    every command, and config.json records the real folder."""
    home = workspace["good"]  # a results folder with a finished run, as $HOME
    result = invoke("table", "--results", "~", env={"HOME": str(home)})
    assert result.exit_code == 0, result.output
    assert "no finished runs" not in result.output and "ce" in result.stdout
    result = invoke("run", "--method", "ce", *FAST, "--epochs", "1", "--results", "~/tilde", "--run-name", "t",
                    "--data-root", "~/no-data-needed", env={"HOME": str(tmp_path)})
    assert result.exit_code == 0, result.output
    config = read_run(tmp_path / "tilde", "t", "config.json")
    assert config["out"] == str(tmp_path / "tilde") and config["data_root"] == str(tmp_path / "no-data-needed")
    assert not (Path.cwd() / "~").exists()


EXPLODING_LOSS = '''
from ltbench import Method, register_method


@register_method("exploding-loss")
class ExplodingLoss(Method):
    """CE whose loss value is a million times larger in the last epoch, with CE's gradient: a loss that
    explodes and stays finite, so the loop's NaN check never fires."""

    def stages(self, recipe):
        return [recipe.representation(loss="exploding-loss")]

    def loss(self, out, batch, state):
        loss = super().loss(out, batch, state)
        return loss + 1e6 * loss.detach() if state.epoch == state.epochs - 1 else loss
'''


def test_a_run_whose_loss_exploded_but_stayed_finite_is_marked_diverged(workspace, tmp_path):
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "exploding_loss.py").write_text(EXPLODING_LOSS)
    result = invoke("run", "--method", "exploding-loss", "--plugins", tmp_path / "plugins", *FAST, "--epochs", "2",
                    "--results", tmp_path / "results", "--run-name", "boom")
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("warning: run 'boom' diverged: stage 'representation' ended at a "
                                                   "training loss of "), result.stderr
    assert '("diverged": true)' in lines[0] and "lower --lr or --batch-size" in lines[0]
    metrics = read_run(tmp_path / "results", "boom")
    assert metrics["diverged"] is True and "a uniform guess costs ln 10" in metrics["diverged_because"]
    assert "diverged" not in read_run(workspace["out"], "done")  # a run that trained as it should is not marked


def test_a_damaged_decode_cache_is_rebuilt_with_one_warning_line(tmp_path):
    """CIFAR image folders whose decode cache was cut to half its bytes: the run decodes again, rewrites it and
    says so in one warning line (shown with -q too)."""
    from tests.data.test_sources import write_image_folders

    write_image_folders(tmp_path / "data" / "cifar10")
    args = ["run", "--method", "ce", "--dataset", "cifar10-lt", "--data-root", tmp_path / "data", "--imbalance", "1",
            "--val-per-class", "0", "--recipe", "smoke", "--epochs", "1", "--precision", "fp32", "--device", "cpu",
            "-q", "--results", tmp_path / "results"]
    assert invoke(*args, "--run-name", "first").exit_code == 0
    cache = tmp_path / "data" / "cifar10" / "ltbench-cifar10-lt.npz"
    cache.write_bytes(cache.read_bytes()[:cache.stat().st_size // 2])
    result = invoke(*args, "--run-name", "second")
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == [f"warning: decode cache {cache} is damaged (BadZipFile: File is not a zip file); decoding the "
                     f"images again and rewriting it"], result.stderr
    assert np.load(cache)["train_images"].shape == (20, 32, 32, 3)
