"""The README is a contract: its command blocks, followed top to bottom as a new user would, all succeed.

Every ``ltbench`` command of every ```bash block runs in order, in one fresh working folder (with the
repository's benchmarks/ and docs/ beside it, as in a clone), in process. Three changes keep it short:
``ltbench run`` trains 2 + 1 epochs (``--epochs 2 --stage2-epochs 1``, recipes otherwise as written), the
smoke sweep (every built-in method) gets the same epochs and precision appended to its suite file
(SHORT_SUITE; 3 + 2 epochs as written), and the few commands that need what a test machine lacks are listed
in SKIPPED with the reason and the test that covers them.
"""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from tests.helpers import invoke

REPO = Path(__file__).resolve().parents[1]
SHORT_RUN = ["--epochs", "2", "--stage2-epochs", "1", "--precision", "fp32"]
SHORT_SUITE = '\nepochs = 2\nstage2_epochs = 1\nprecision = "fp32"\n'  # SHORT_RUN for the smoke suite's runs
SKIPPED = {  # a README command -> why it is not run here, and where it is covered
    "python -m pytest -q": "the test suite itself",
    "ltbench run --method crt --dataset cifar10-lt --imbalance 100 --recipe paper --data-root ~/data":
        "needs CIFAR-10 and minutes of CPU: tests/test_cli.py::test_crt_on_real_cifar10_images",
    "ltbench table --with-reference --filter recipe=paper":
        "reads the paper-recipe CIFAR-10-LT run above, not trained here: tests/results/test_tables.py (--with-reference)",
    "torchrun --nproc_per_node=8 -m ltbench run --method crt --dataset imagenet-lt --data-root /data":
        "needs ImageNet-LT and 8 processes: tests/engine/test_ddp.py",
    "ltbench run --method crt --dataset imagenet-lt --nproc 8": "needs ImageNet-LT: tests/engine/test_ddp.py",
    "python benchmarks/gpu_check.py --data-root ~/data --out results/gpu":
        "needs a GPU: tests/benchmarks/test_gpu_check.py runs its --cpu-dry-run",
}


def readme_commands(text: str) -> list[str]:
    """The commands of the ```bash blocks in order: comments dropped, `a && b` chains split, installs kept out."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if not line or line.startswith("#"):
                continue
            for part in (p.strip() for p in line.split("&&")):
                if part.startswith(("python3 -m venv", ". .venv", "pip install")):
                    continue  # CI's .ci/run does exactly these installs before the suite
                commands.append(part)
    return commands


def test_the_readme_lists_the_skipped_commands_verbatim():
    """SKIPPED must not go stale: each entry is still a README command (else it silently skips nothing)."""
    commands = readme_commands((REPO / "README.md").read_text())
    assert set(SKIPPED) <= set(commands), set(SKIPPED) - set(commands)
    assert len([c for c in commands if c not in SKIPPED]) >= 17


def test_every_readme_command_block_runs_in_order(tmp_path, monkeypatch):
    (tmp_path / "docs").symlink_to(REPO / "docs")
    (tmp_path / "benchmarks").mkdir()
    for path in (REPO / "benchmarks").iterdir():  # smoke.toml as written plus SHORT_SUITE, the rest linked
        if path.name == "smoke.toml":
            assert not re.search(r"^(epochs|stage2_epochs|precision)\s*=", path.read_text(), flags=re.M), \
                "smoke.toml sets epochs or precision now: SHORT_SUITE would repeat a key"
            (tmp_path / "benchmarks" / path.name).write_text(path.read_text() + SHORT_SUITE)
        else:
            (tmp_path / "benchmarks" / path.name).symlink_to(path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LTBENCH_PLUGINS", raising=False)
    ran = []
    for command in readme_commands((REPO / "README.md").read_text()):
        if command in SKIPPED:
            continue
        words = shlex.split(command)
        assert words[0] == "ltbench", f"README command not covered by this test: {command}"
        args = words[1:]
        if args[0] == "run":
            args += SHORT_RUN
        result = invoke(*args)
        assert result.exit_code == 0, f"README command failed: {command}\n{result.output}"
        ran.append(command)
    assert any(c.startswith("ltbench sweep") for c in ran) and any(c.startswith("ltbench plot") for c in ran)
    assert len(list((tmp_path / "results" / "runs").glob("*/metrics.json"))) >= 10  # quick start + smoke sweep
    assert (tmp_path / "table.tex").is_file() and (tmp_path / "per-class.png").is_file()


def test_the_smoke_suite_of_the_readme_runs_every_built_in_method():
    from ltbench.registry import load_methods
    from ltbench.sweep import load_suite

    built_in = {e.name for e in load_methods().entries() if e.origin == "built-in"}
    suite = load_suite(REPO / "benchmarks" / "smoke.toml")
    assert {config.method for _, config in suite.runs} == built_in and len(built_in) >= 18
