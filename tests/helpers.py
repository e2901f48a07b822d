"""Helpers shared by the test files (imported as ``from tests.helpers import ...``; fixtures wrapping them are in
tests/conftest.py): the CLI in-process, the fast run arguments, fabricated run folders, fault plugins, tiny
image datasets and readers of what a run writes."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from ltbench.cli import app
from ltbench.files import write_json
from ltbench.record import CONFIG_FILE, METRICS_FILE, NUMERICS_VERSION, RunRecord

REPO = Path(__file__).resolve().parents[1]

# a run in seconds: the embedded digits-lt data, the smoke recipe, fp32 on CPU, no progress output
FAST = ["--dataset", "digits-lt", "--recipe", "smoke", "--precision", "fp32", "--device", "cpu", "-q"]


def invoke(*args, env: dict | None = None):
    """`ltbench ARGS` in-process (arguments str()-ed); wide columns, so table cells do not fold."""
    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "300", **(env or {})})


def fast_run(out: Path, method: str, name: str, *extra) -> dict:
    """`ltbench run --method METHOD` with the FAST arguments into results folder OUT as run NAME; its metrics."""
    result = invoke("run", "--method", method, *FAST, "--results", out, "--run-name", name, *extra)
    assert result.exit_code == 0, result.output
    return read_run(out, name)


def logits_of(out: Path, name: str) -> np.ndarray:
    """The test logits run NAME wrote under OUT."""
    return np.load(out / "runs" / name / "test_logits.npz")["logits"]


def read_run(out: Path, name: str, file: str = "metrics.json") -> dict:
    """A JSON file of run NAME under the results folder OUT (metrics.json by default)."""
    return json.loads((out / "runs" / name / file).read_text())


def table_rows(output: str) -> list[list[str]]:
    """The body rows of a rich box table as lists of stripped cells (a row whose first cell is empty
    continues the row above when a cell wraps: its cells are joined onto that row's)."""
    rows = []
    for line in output.splitlines():
        if not line.startswith("\u2502"):  # "│": body rows only (no title, header, rules)
            continue
        cells = [cell.strip() for cell in line.strip().strip("\u2502").split("\u2502")]
        if cells[0] or not rows:
            rows.append(cells)
        else:
            rows[-1] = [f"{a} {b}".strip() for a, b in zip(rows[-1], cells)]
    return rows


# --- fabricated run folders ----------------------------------------------------------------------------

GROUP_SIZES = {"cifar10-lt": {"many": 10, "medium": 0, "few": 0}, "cifar100-lt": {"many": 35, "medium": 35, "few": 30}}


def make_run(results: Path, name: str, method: str = "ce", seed: int = 0, acc: float = 70.0, *,
             options: dict | None = None, dataset: str = "cifar10-lt", imbalance: float | None = 100.0,
             recipe: str = "paper", backbone: str = "resnet32", ece: float = 5.0, per_class: list | None = None,
             train_counts: list | None = None, logits: np.ndarray | None = None, labels: np.ndarray | None = None,
             **config) -> Path:
    """A finished run folder as `ltbench run` writes it (only the fields that tables and plots read), in the
    run-file format of ltbench.record."""
    run = results / "runs" / name
    run.mkdir(parents=True)
    sizes = GROUP_SIZES.get(dataset, {"many": 2, "medium": 4, "few": 4})
    record = RunRecord(run, {
        "method": method, "method_options": options or {}, "dataset": dataset, "imbalance": imbalance,
        "profile": "exp", "backbone": backbone, "recipe": recipe, "seed": seed, "precision": "fp32",
        "epochs": None, "stage2_epochs": None, "batch_size": None, "lr": None, "stage2_lr": None,
        "run_key": f"key-{name}", "numerics": NUMERICS_VERSION, **config}, {
        "acc": acc, "many_acc": min(acc + 10, 100.0), "medium_acc": max(acc - 10, 0.0) if sizes["medium"] else None,
        "few_acc": max(acc - 30, 0.0) if sizes["few"] else None, "ece": ece, "nll": 1.0, "wrong_confidence": 0.7,
        "balanced_acc": acc, "group_sizes": sizes, "feature_compactness": 0.5, "stages": [],
        "run_key": f"key-{name}", "status": "complete"})
    write_json(run / CONFIG_FILE, record.to_config_json())
    write_json(run / METRICS_FILE, record.to_metrics_json())
    if per_class is not None:
        rows = "".join(f"{c},{n},30,0,{a},many\n" for c, (n, a) in enumerate(zip(train_counts, per_class)))
        (run / "per_class.csv").write_text("class,train_count,test_count,correct,acc,group\n" + rows)
    if logits is not None:
        np.savez_compressed(run / "test_logits.npz", logits=logits.astype(np.float32), labels=labels.astype(np.int64))
    return run


# --- fault plugins -------------------------------------------------------------------------------------

FAULT_PLUGIN = '''
import dataclasses
import os
import signal

from ltbench import register_method
from ltbench.registry import METHODS


@register_method({name!r}, summary="{base} with a fault at ACTION:STAGE:EPOCH:STEP from ${env} (tests)")
class Fault(METHODS.get({base!r}).obj):
    def stages(self, recipe):
        stages = super().stages(recipe)
        if {own_stage1!r}:  # a stage 1 of its own (not the shared CE stage, which the core's hooks train)
            return [recipe.representation(loss={own_stage1!r}), *stages[1:]]
        if {unshared!r}:  # its hooks run in every stage: none of them is the shared CE stage
            return [dataclasses.replace(stage, core_trained=False) for stage in stages]
        return stages

    def stage_hooks(self, index):
        """A stage trained by other hooks (DaSL's parts, MiSLAS' mixup stage) gets the fault in its loss too."""
        hooks = super().stage_hooks(index)
        if hooks is not self and not getattr(hooks, "faulty", False):
            inner = hooks.loss
            hooks.loss = lambda out, batch, state: self.fault(inner(out, batch, state), state)
            hooks.faulty = True
        return hooks

    def loss(self, out, batch, state):
        return self.fault(super().loss(out, batch, state), state)

    def fault(self, loss, state):
        action, *where = (os.environ.get({env!r}) or {default!r}).split(":")
        if (state.stage_index, state.epoch, state.step) == tuple(int(v) for v in where):
            if action == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            elif action == "term":
                os.kill(os.getpid(), signal.SIGTERM)
            elif action == "nan":
                loss = loss * float("nan")
            elif action == "oom":
                import torch
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return loss
'''


def write_fault_plugin(path: Path, name: str, base: str = "crt", *, env: str = "LTBENCH_TEST_FAULT",
                       default: str = "none:-1:-1:-1", unshared: bool = True, own_stage1: str | None = None) -> Path:
    """A plugin file at PATH registering method NAME: BASE whose loss() acts at ACTION:STAGE:EPOCH:STEP (from
    $ENV, else DEFAULT; 0-based): `kill` (SIGKILL), `term` (SIGTERM), `nan` (a NaN loss) or `oom` (CUDA out of
    memory). UNSHARED: no stage is the shared CE stage (so loss() runs in every stage); OWN_STAGE1: stage 1
    replaced by a representation stage with that loss name instead."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(FAULT_PLUGIN.format(name=name, base=base, env=env, default=default, unshared=unshared,
                                        own_stage1=own_stage1))
    return path


# --- tiny image datasets -------------------------------------------------------------------------------

def write_image(path: Path, value: int, size: int) -> None:
    Image.fromarray(np.full((size, size, 3), value, np.uint8)).save(path, quality=95)


def png_header(width: int, height: int) -> bytes:
    """A PNG of a few dozen bytes whose header claims WIDTH x HEIGHT RGB pixels (a decompression bomb's header:
    opening it reads the size; only decoding would need the memory)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


def write_list(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(f"{line}\n" for line in lines).encode()
    path.write_bytes(gzip.compress(text) if path.suffix == ".gz" else text)


def write_split_dataset(image_root: Path, classes: list[str], splits: dict[str, int]) -> dict[str, list[str]]:
    """Tiny JPEGs at <image_root>/<split>/<class>/<i>.jpg; returns each split's list lines."""
    lines = {}
    for split, per_class in splits.items():
        lines[split] = []
        for label, name in enumerate(classes):
            (image_root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                write_image(image_root / split / name / f"{i}.jpg", 40 * label, 8)
                lines[split].append(f"{split}/{name}/{i}.jpg {label}")
    return lines
