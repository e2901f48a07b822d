"""Everything a lent GPU should tell us, in one command that fits a short lease (about 6-8 minutes on an H200).

    python benchmarks/gpu_check.py --data-root DIR [--out results/gpu]
    python benchmarks/gpu_check.py --cpu-dry-run --out /tmp/gpu-check     # the same script on CPU, tiny, ~1-2 min

Parts, in this order, each a subprocess with its own time limit (``--limit PART=SECONDS``); a part that
fails or runs out of time is recorded as such and the next one still runs:

  pytest  ``pytest -m gpu`` on the test files holding gpu-marked tests (tests/engine/test_gpu.py): on-device data
          and augmentation, bf16, fp16 + GradScaler, channels_last, --compile, resume, DDP (2+ GPUs)   180 s
  speed   ``benchmarks/speed.py --device cuda`` (CIFAR-10-LT IF100, ResNet-32): targets b/c >= 5 (ltbench's
          loop against the PIL + DataLoader reference loop) and b/a >= 0.9 (against the compute limit)   120 s
  ce      ``ltbench run --method ce --dataset cifar10-lt --imbalance 100 --recipe paper``: the full 200-epoch
          protocol, timed (target: stage 1 trains in <= 300 s); stopped at its limit, it still reports the
          epochs done and the projected 200-epoch time                                                  330 s
  crt     ``ltbench run --method crt`` into the same results folder: reuses ce's stage 1, trains the
          30-epoch classifier stage                                                                      90 s
  feed    ``benchmarks/decode.py --gpu-rate``: ResNet-50 / ResNeXt-50 training images/s at 224 px on the
          GPU, and the cores that feeding them takes at results/decode-cpu.json's per-core decode rates    60 s

A part's status: passed (ran, targets met), missed (ran, a target missed), incomplete (ran, a figure
missing, e.g. no reference loop without CIFAR-10 image folders), skipped, failed, timeout; ran (dry run: ran,
targets not graded).

Every figure lands in ``--out`` (default results/gpu/): one JSON per part (pytest.json, speed.json,
cifar10_lt_ce.json, cifar10_lt_crt.json, feed.json) and summary.json; a rich table sums them up. Run
folders and logs go to a temporary work folder (``--work`` to keep them). ``--parts ce crt`` reruns some.

Data: ``--data-root`` is any folder holding ``cifar10/{train,test}/<class>/*.jpg`` (about 55 MB) or
torchvision's ``cifar-10-batches-py/``; on a machine that gets only the repository, copy the image folders
into an ignored folder of the checkout (e.g. ``.gpu-data/cifar10/``, listed in .git/info/exclude) and pass
``--data-root .gpu-data``. Without an installed ltbench (only the checkout), the script puts a copy of the
package, with methods/ inside it as ``ltbench.methods``, on PYTHONPATH for its subprocesses.

``--cpu-dry-run``: the same parts on CPU with tiny settings (digits-lt and synthetic data, smoke recipe, one
epoch per stage, speed.py and decode.py on a few images, one thread), where the gpu tests skip; their figures
mean nothing, the point is that the script, its parts and their JSON keep working (tests/benchmarks/test_gpu_check.py).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROBE = ("import json, platform, torch, ltbench.methods, ltbench.cli; print(json.dumps({'torch': torch.__version__, "
         "'cuda': torch.version.cuda, 'gpus': [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],"
         " 'python': platform.python_version(), 'ltbench': ltbench.__file__}))")
PARTS = ("pytest", "speed", "ce", "crt", "feed")
LIMITS = {"pytest": 180, "speed": 120, "ce": 330, "crt": 90, "feed": 60}  # seconds, each part's own
DRY_LIMITS = {"pytest": 150, "speed": 150, "ce": 150, "crt": 150, "feed": 150}  # a loaded 2-core CPU
CE_TARGET_S = 300.0  # the 200-epoch stage 1 of CIFAR-10-LT IF100
FILES = {"pytest": "pytest.json", "speed": "speed.json", "ce": "cifar10_lt_ce.json", "crt": "cifar10_lt_crt.json",
         "feed": "feed.json"}
TERM_GRACE_S = 30  # after SIGTERM (ltbench saves a checkpoint), before SIGKILL


class Check:
    """What the parts share: the interpreter, environment, folders and the dry-run switch."""

    def __init__(self, args):
        self.dry = args.cpu_dry_run
        self.device = "cpu" if self.dry else "cuda"
        self.data_root = str(Path(args.data_root).expanduser().resolve()) if args.data_root else None
        self.out = Path(args.out).expanduser().resolve()
        self.work = Path(args.work).expanduser().resolve() if args.work else Path(tempfile.mkdtemp(prefix="gpu-check-"))
        self.work.mkdir(parents=True, exist_ok=True)
        self.limits = dict(DRY_LIMITS if self.dry else LIMITS)
        for item in args.limit or []:
            part, _, seconds = item.partition("=")
            if part not in PARTS or not seconds.replace(".", "", 1).isdigit():
                raise SystemExit(f"error: --limit {item!r}: expected PART=SECONDS with PART one of {', '.join(PARTS)}")
            self.limits[part] = float(seconds)
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        if self.dry:  # 2 threads on 2 shared, busy cores spin-wait ~10x slower than 1 (results/speed.md)
            self.env["OMP_NUM_THREADS"] = "1"
        self.notes: list[str] = []
        self.environment = self._probe()

    def _probe(self) -> dict:
        """The environment the parts will see, with ltbench (and ltbench.methods) importable there, installed
        or not: without an install, a copy of the checkout's package goes on PYTHONPATH."""
        probe = [sys.executable, "-c", PROBE]
        proc = subprocess.run(probe, cwd=self.work, env=self.env, capture_output=True, text=True)
        if proc.returncode != 0:
            site = self.work / "site"
            shutil.rmtree(site, ignore_errors=True)
            skip = shutil.ignore_patterns("__pycache__")
            shutil.copytree(REPO / "ltbench", site / "ltbench", ignore=skip)
            shutil.copytree(REPO / "methods", site / "ltbench" / "methods", ignore=skip)
            self.env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), self.env.get("PYTHONPATH")]))
            self.notes.append(f"ltbench is not installed: a copy of the checkout's package is on PYTHONPATH ({site})")
            proc = subprocess.run(probe, cwd=self.work, env=self.env, capture_output=True, text=True)
            if proc.returncode != 0:
                raise SystemExit(f"error: ltbench cannot be imported even from a copy of the checkout ("
                                 f"{proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else proc.returncode});"
                                 f" install its dependencies (torch, torchvision, timm, typer, rich, pandas, "
                                 f"scikit-learn)")
        info = json.loads(proc.stdout.strip().splitlines()[-1])
        try:
            commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout
        except OSError:  # no git on the machine
            commit = ""
        info.update(git_commit=commit.strip() or None, cores=os.cpu_count(), host=os.uname().nodename)
        return info

    def run(self, part: str, command: list, limit: float | None = None) -> dict:
        """Run ``command`` (cwd: the work folder, so the checkout's ltbench/ never shadows the importable one)
        with the part's time limit: SIGTERM at the limit, SIGKILL TERM_GRACE_S later. Output goes to a log."""
        limit = self.limits[part] if limit is None else limit
        log = self.work / f"{part}.log"
        start = time.perf_counter()
        with open(log, "w") as stream:
            proc = subprocess.Popen([str(c) for c in command], cwd=self.work, env=self.env, stdout=stream,
                                    stderr=subprocess.STDOUT, start_new_session=True)
            timed_out = False
            try:
                proc.wait(timeout=limit)
            except subprocess.TimeoutExpired:
                timed_out = True
                _signal_group(proc, signal.SIGTERM)
                try:
                    proc.wait(timeout=TERM_GRACE_S)
                except subprocess.TimeoutExpired:
                    _signal_group(proc, signal.SIGKILL)
                    proc.wait()
        text = log.read_text(errors="replace")
        return {"command": " ".join(str(c) for c in command), "returncode": proc.returncode, "timed_out": timed_out,
                "limit_s": limit, "seconds": round(time.perf_counter() - start, 1), "log_tail": text[-3000:]}


def _signal_group(proc: subprocess.Popen, signum: int) -> None:
    try:
        os.killpg(proc.pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def _failed(run: dict) -> str | None:
    if run["timed_out"]:
        return "timeout"
    return "failed" if run["returncode"] != 0 else None


# parts --------------------------------------------------------------------------------------------
def part_pytest(check: Check, state: dict) -> dict:
    files = sorted(p for p in (REPO / "tests").rglob("test_*.py") if "pytest.mark.gpu" in p.read_text())
    junit = check.work / "pytest.xml"
    run = check.run("pytest", [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-rs", "-p", "no:cacheprovider",
                               "--rootdir", REPO, "-c", REPO / "pyproject.toml", f"--junitxml={junit}", *files])
    tests = _junit(junit)
    counts = {k: sum(1 for t in tests if t["outcome"] == k) for k in ("passed", "failed", "error", "skipped")}
    status = _failed(run) if run["returncode"] not in (0, 5) or run["timed_out"] else None
    if status is None:
        if counts["failed"] or counts["error"]:
            status = "failed"
        elif tests and counts["skipped"] == len(tests):
            status = "skipped"
        else:
            status = "passed" if tests else "failed"
    figure = ", ".join(f"{v} {k}" for k, v in counts.items() if v) or "no tests ran"
    return {"status": status, "figure": figure, "target": "all pass", "counts": counts, "tests": tests,
            "files": [str(f.relative_to(REPO)) for f in files], **run}


def _junit(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    tests = []
    for case in ElementTree.parse(path).getroot().iter("testcase"):
        outcome, message = "passed", ""
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = "failed" if child.tag == "failure" else child.tag
                message = (child.get("message") or child.text or "").strip()[:500]
        tests.append({"name": f"{case.get('classname')}::{case.get('name')}", "outcome": outcome,
                      "seconds": float(case.get("time") or 0), "message": message})
    return tests


def part_speed(check: Check, state: dict) -> dict:
    raw = check.work / "speed-raw.json"
    command = [sys.executable, REPO / "benchmarks" / "speed.py", "--device", check.device, "--out", raw]
    if check.data_root:
        command += ["--data-root", check.data_root]
    if check.dry:
        command += ["--synthetic", "--max-images", "64", "--batch-size", "16", "--limit-steps", "2",
                    "--skip-reference", "--skip-dasl"]
    else:
        command += ["--limit-steps", "200", "--epochs", "2"]  # GPU steps are short: time more of them
    run = check.run("speed", command)
    result = json.loads(raw.read_text()) if raw.is_file() else None
    status = _failed(run) or ("failed" if result is None else None)
    figure, target = "-", "b/c >= 5, b/a >= 0.9"
    if result is not None:
        ratios, met = result.get("ratios", {}), result.get("met", {})
        figure = ", ".join(f"{k} {v:.2f}" for k, v in ratios.items() if k in ("b/a", "b/c"))
        figure += f"; b {result['b_ltbench_ce']:.0f} img/s ({result['precision']})"
        if "b/c" not in ratios:
            figure += "; no reference loop (needs CIFAR-10 image folders)"
        status = status or ("passed" if all(met.get(k, True) for k in ("b/a", "b/c")) and "b/c" in ratios
                            else "missed" if not all(met.values()) else "incomplete")
    return {"status": status, "figure": figure, "target": target, "result": result, **run}


def _ltbench_run(check: Check, part: str, method: str) -> dict:
    results = check.work / "results"
    command = [sys.executable, "-m", "ltbench", "run", "--method", method, "--device", check.device,
               "--results", results, "--run-name", f"{method}-{part}", "-q"]
    if check.dry:
        command += ["--dataset", "digits-lt", "--recipe", "smoke", "--epochs", "1", "--stage2-epochs", "1",
                    "--precision", "fp32"]
    else:
        command += ["--dataset", "cifar10-lt", "--imbalance", "100", "--recipe", "paper"]
    if check.data_root:
        command += ["--data-root", check.data_root]
    run = check.run(part, command)
    run_dir = results / "runs" / f"{method}-{part}"
    config, metrics, log = _read_run(run_dir)
    return {"run": run, "config": config, "metrics": metrics, "log": log}


def _read_run(run_dir: Path):
    def load(name):
        path = run_dir / name
        return json.loads(path.read_text()) if path.is_file() else None

    log_path = run_dir / "epochs.jsonl"
    log = [json.loads(line) for line in log_path.read_text().splitlines()] if log_path.is_file() else []
    return load("config.json"), load("metrics.json"), log


def _stage_figures(config, metrics, log, index: int) -> dict:
    lines = [e for e in log if e.get("stage_index") == index]
    epochs = (config or {}).get("stages", [{}] * (index + 1))[index].get("optim", {}).get("epochs")
    stage = (metrics or {}).get("stages", [{}] * (index + 1))[index] if metrics else {}
    seconds = [e["seconds"] for e in lines]
    rates = sorted(e["images_per_s"] for e in lines[1:]) or [e["images_per_s"] for e in lines]
    figures = {"epochs_planned": epochs, "epochs_done": len(lines), "train_seconds": stage.get("seconds"),
               "epoch_seconds_sum": round(sum(seconds), 2), "first_epoch_s": seconds[0] if seconds else None,
               "median_images_per_s": rates[len(rates) // 2] if rates else None, "reused": stage.get("reused")}
    if lines and epochs and len(lines) < epochs:  # stopped early: project from the epochs after the first
        rest = seconds[1:] or seconds
        figures["projected_train_seconds"] = round(seconds[0] + (epochs - 1) * sum(rest) / len(rest), 1)
    return figures


def _accuracy(metrics) -> dict:
    if not metrics:
        return {}
    return {k: metrics.get(k) for k in ("acc", "many_acc", "medium_acc", "few_acc", "ece", "wall_time_s")}


def part_ce(check: Check, state: dict) -> dict:
    done = _ltbench_run(check, "ce", "ce")
    run, metrics = done["run"], done["metrics"]
    stage = _stage_figures(done["config"], metrics, done["log"], 0)
    status = _failed(run) or ("failed" if metrics is None else None)
    seconds = stage["train_seconds"] if metrics else stage.get("projected_train_seconds")
    met = seconds is not None and seconds <= CE_TARGET_S
    status = status or ("passed" if met else "missed")
    label = "projected " if not metrics and seconds else ""
    figure = (f"stage 1 {label}{seconds:.0f} s for {stage['epochs_planned']} epochs" if seconds else "no epoch done")
    if metrics:
        figure += f"; top-1 {metrics['acc']:.2f} %"
    state["ce_finished"] = metrics is not None
    state["results"] = check.work / "results"
    return {"status": status, "figure": figure, "target": f"stage 1 <= {CE_TARGET_S:.0f} s", "met": met,
            "stage1": stage, "metrics": _accuracy(metrics), "precision": (done["config"] or {}).get("precision"),
            "device": (done["config"] or {}).get("device"), **run}


def part_crt(check: Check, state: dict) -> dict:
    if not state.get("ce_finished"):
        return {"status": "skipped", "figure": "the ce part did not finish its stage 1", "target": "reuses ce's stage 1"}
    done = _ltbench_run(check, "crt", "crt")
    run, metrics = done["run"], done["metrics"]
    stage1, stage2 = (_stage_figures(done["config"], metrics, done["log"], i) for i in (0, 1))
    status = _failed(run) or ("failed" if metrics is None else None)
    reused = bool(stage1.get("reused"))
    status = status or ("passed" if reused else "missed")
    figure = "-"
    if metrics:
        figure = (f"stage 2 {stage2['train_seconds']:.0f} s for {stage2['epochs_planned']} epochs, stage 1 "
                  f"{'reused' if reused else 'NOT reused'}; top-1 {metrics['acc']:.2f} %")
    return {"status": status, "figure": figure, "target": "stage 1 reused", "stage1_reused": reused,
            "stage2": stage2, "metrics": _accuracy(metrics), **run}


def part_feed(check: Check, state: dict) -> dict:
    raw = check.work / "feed-raw.json"
    command = [sys.executable, REPO / "benchmarks" / "decode.py", "--gpu-rate", "--device", check.device, "--out", raw]
    if check.dry:
        command += ["--batch-size", "2", "--steps", "1", "--warmup", "1", "--image-size", "32"]
    run = check.run("feed", command)
    result = json.loads(raw.read_text()) if raw.is_file() else None
    status = _failed(run) or ("failed" if result is None else "passed")
    figure = "-"
    if result:
        rates = result["training_images_per_s"]
        figure = ", ".join(f"{k} {v:.0f} img/s" for k, v in rates.items())
        cores = result.get("cores_to_feed", {}).get("resnet50", {}).get("pil")
        if cores is not None:
            figure += f"; feeding resnet50 takes {cores:.0f} cores (PIL)"
    return {"status": status, "figure": figure, "target": "(measurement)", "result": result, **run}


RUNNERS = {"pytest": part_pytest, "speed": part_speed, "ce": part_ce, "crt": part_crt, "feed": part_feed}


# driver -------------------------------------------------------------------------------------------
def write_json(path: Path, obj) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str))
    tmp.replace(path)


def print_table(summary: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    title = "gpu_check" + (" --cpu-dry-run (tiny CPU settings: figures mean nothing)" if summary["dry_run"] else "")
    gpus = summary["environment"].get("gpus") or ["no GPU"]
    table = Table(title=f"{title}: {', '.join(gpus)}, {summary['total_seconds']:.0f} s")
    for column in ("part", "status", "figure", "target", "seconds"):
        table.add_column(column, overflow="fold")
    colours = {"passed": "green", "ran": "green", "missed": "yellow", "incomplete": "yellow", "skipped": "cyan",
               "failed": "red", "timeout": "red"}
    for name, part in summary["parts"].items():
        status = part["status"]
        table.add_row(name, f"[{colours.get(status, 'white')}]{status}[/]", part.get("figure", "-"),
                      part.get("target", "-"), f"{part.get('seconds') or 0:.0f}")
    Console(width=max(120, shutil.get_terminal_size().columns)).print(table)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default=None, help="folder holding cifar10/{train,test}/ (or cifar-10-batches-py/)")
    parser.add_argument("--out", default=str(REPO / "results" / "gpu"), help="folder for the JSON figures")
    parser.add_argument("--work", default=None, help="folder for run folders and logs (default: a temporary one)")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS), help="run only these parts")
    parser.add_argument("--limit", action="append", metavar="PART=SECONDS", help="a part's time limit (repeatable)")
    parser.add_argument("--cpu-dry-run", action="store_true", help="the same parts on CPU with tiny settings")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    check = Check(args)
    check.out.mkdir(parents=True, exist_ok=True)
    info = check.environment
    if not check.dry and not info.get("gpus"):
        print("error: torch sees no CUDA GPU here; run with --cpu-dry-run to exercise this script on CPU",
              file=sys.stderr)
        return 2
    summary = {"dry_run": check.dry, "started": dt.datetime.now().isoformat(timespec="seconds"),
               "data_root": check.data_root, "work": str(check.work), "environment": info, "notes": check.notes,
               "parts": {}}
    state: dict = {}
    for name in args.parts:
        print(f"gpu_check: {name} (limit {check.limits[name]:.0f} s) ...", flush=True)
        try:
            part = RUNNERS[name](check, state)
        except Exception as exc:  # a broken part is recorded; the others still run
            part = {"status": "failed", "figure": f"{type(exc).__name__}: {exc}", "target": "-", "seconds": 0}
        part["part"] = name
        if check.dry and part["status"] in ("passed", "missed", "incomplete"):
            part["status"] = "ran"  # tiny CPU settings: the targets are not graded
        write_json(check.out / FILES[name], part)
        summary["parts"][name] = {k: part.get(k) for k in ("status", "figure", "target", "seconds", "limit_s")}
        print(f"gpu_check: {name}: {part['status']} ({part.get('figure', '-')})", flush=True)
    summary["total_seconds"] = round(time.perf_counter() - started, 1)
    write_json(check.out / "summary.json", summary)
    print_table(summary)
    print(f"figures: {check.out}; run folders and logs: {check.work}")
    if not args.work:
        shutil.rmtree(check.work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
