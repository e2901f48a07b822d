"""How long the commands that never train take to start, as whole processes, against `python -c pass`.

    python benchmarks/startup.py [--repeat 5] [--results DIR] [--out results/startup.json]

Each command runs ``--repeat`` times (median wall seconds); a separate ``python -X importtime`` run says
whether it imported torch. Without ``--results`` a results folder with one finished smoke run (digits-lt,
1 + 1 epochs, trained first and not timed) is made in a temporary folder, so ``table`` and ``plot`` read
runs written by this version (which record their method defaults, so neither imports torch).
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def seconds(command: list[str], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def imports_torch(command: list[str]) -> bool:
    proc = subprocess.run([command[0], "-X", "importtime", *command[1:]], capture_output=True, text=True, check=True)
    return any(line.split("|")[-1].strip() == "torch" for line in proc.stderr.splitlines())  # nested too


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--results", default=None, help="results folder for table and plot (default: a fresh one)")
    parser.add_argument("--out", default=None, help="write the figures as JSON here")
    args = parser.parse_args()
    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        results = args.results
        if results is None:
            results = str(Path(tmp) / "results")
            subprocess.run([py, "-m", "ltbench", "run", "--method", "crt", "--recipe", "smoke", "--epochs", "1",
                            "--stage2-epochs", "1", "--results", results, "-q"], check=True, stdout=subprocess.DEVNULL)
        commands = {
            "python -c pass": [py, "-c", "pass"],
            "python -c 'import torch'": [py, "-c", "import torch"],
            "ltbench --help": [py, "-m", "ltbench", "--help"],
            "ltbench datasets": [py, "-m", "ltbench", "datasets"],
            "ltbench table": [py, "-m", "ltbench", "table", "--results", results],
            "ltbench plot per-class": [py, "-m", "ltbench", "plot", "per-class", "--results", results, "--out",
                                       str(Path(tmp) / "p.png")],
            "ltbench methods": [py, "-m", "ltbench", "methods"],
        }
        base = seconds(commands["python -c pass"], args.repeat)
        rows = []
        for name, command in commands.items():
            s = seconds(command, args.repeat)
            rows.append({"command": name, "seconds": round(s, 3), "ratio_to_python": round(s / base, 1),
                         "imports_torch": imports_torch(command)})
            print(f"{name:28s} {s:6.2f} s  {s / base:5.1f}x python -c pass  torch imported: "
                  f"{'yes' if rows[-1]['imports_torch'] else 'no'}", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps({"repeat": args.repeat, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
