"""Does ltbench order the methods as the papers do? Our runs' top-1 (mean over seeds, default options only)
beside the published number of the same method on the same data set and imbalance, each list ranked, and
Kendall's tau-b between the two rankings.

    python benchmarks/ordering.py [--results results/cpu/cifar10-lt-if100] [--dataset cifar10-lt] [--imbalance 100]

Read the ranks, not the gaps: the committed CPU runs use the 30 + 10-epoch `cpu` recipe, and the published
numbers come from several papers with their own schedules (ltbench/results/reference.py names each source).
Methods without a published number in that table (DaSL: the paper's text is not available) are listed
apart and left out of tau.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# ltbench method -> (source, method name as in ltbench/results/reference.py REFERENCES)
PUBLISHED = {
    "ce": ("BagofTricks-LT", "CE"),
    "crt": ("BagofTricks-LT", "cRT"),
    "lws": ("BagofTricks-LT", "LWS"),
    "tau-norm": ("BagofTricks-LT", "tau-norm"),
    "label-smoothing": ("BagofTricks-LT", "label smoothing (CE)"),
    "focal": ("BagofTricks-LT gallery", "focal loss (sigmoid)"),
    "cb": ("BagofTricks-LT gallery", "ClassBalanceCE"),
    "balanced-softmax": ("BagofTricks-LT gallery", "BalancedSoftmaxCE"),
    "mixup": ("BagofTricks-LT gallery", "input mixup"),
    "drw": ("BagofTricks-LT gallery", "DRW + ClassBalanceCE"),
    "ldam-drw": ("BagofTricks-LT gallery", "DRW + LDAM loss"),
    "drs": ("BagofTricks-LT gallery", "DRS, class-balanced sampling"),
    "mislas": ("MiSLAS", "MiSLAS"),
    "posthoc-la": ("Menon et al.", "post-hoc logit adjustment"),
    "la-loss": ("Menon et al.", "logit-adjusted loss"),
}


def published(dataset: str, imbalance: float) -> dict[str, tuple[float, str]]:
    """ltbench method -> (published top-1, source) in this setting, where the reference table has one."""
    from ltbench.results.reference import REFERENCES

    by_name = {(r.source, r.method): r for r in REFERENCES if r.dataset == dataset and r.imbalance == imbalance}
    return {m: (by_name[key].acc, key[0]) for m, key in PUBLISHED.items() if key in by_name}


def kendall_tau_b(a: list[float], b: list[float]) -> float:
    """Kendall's tau-b of two paired lists (ties in either list counted as tau-b does)."""
    concordant = discordant = ties_a = ties_b = 0
    for i in range(len(a)):
        for j in range(i + 1, len(a)):
            da, db = a[i] - a[j], b[i] - b[j]
            if da == 0 and db == 0:
                continue
            if da == 0:
                ties_a += 1
            elif db == 0:
                ties_b += 1
            elif (da > 0) == (db > 0):
                concordant += 1
            else:
                discordant += 1
    denominator = ((concordant + discordant + ties_a) * (concordant + discordant + ties_b)) ** 0.5
    return (concordant - discordant) / denominator if denominator else float("nan")


def ranks(values: list[float]) -> list[int]:
    order = sorted(range(len(values)), key=lambda i: -values[i])
    out = [0] * len(values)
    for rank, i in enumerate(order, 1):
        out[i] = rank
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", default=str(REPO / "results" / "cpu" / "cifar10-lt-if100"))
    parser.add_argument("--dataset", default="cifar10-lt")
    parser.add_argument("--imbalance", type=float, default=100)
    args = parser.parse_args(argv)
    from ltbench.results.runs import load_runs

    runs = load_runs(args.results, {"dataset": [args.dataset]}, warn=lambda line: print(line, file=sys.stderr))
    runs = runs[(runs["imbalance"] == args.imbalance) & (runs["base"] == runs["method"])]  # default options
    ours = runs.groupby("method")["acc"].agg(["mean", "count"])
    paper = published(args.dataset, args.imbalance)
    both = [m for m in ours.index if m in paper]
    if len(both) < 2:
        print(f"fewer than two methods with both our runs and a published number under {args.results}")
        return 1
    mine, theirs = [float(ours.loc[m, "mean"]) for m in both], [paper[m][0] for m in both]
    rank_mine, rank_theirs = ranks(mine), ranks(theirs)
    print(f"| method | ours (seeds) | our rank | published | published rank | source |\n|:--|--:|--:|--:|--:|:--|")
    for i in sorted(range(len(both)), key=lambda i: rank_theirs[i]):
        m = both[i]
        print(f"| {m} | {mine[i]:.2f} ({int(ours.loc[m, 'count'])}) | {rank_mine[i]} | {theirs[i]:.2f} | "
              f"{rank_theirs[i]} | {paper[m][1]} |")
    print(f"\nKendall tau-b of the two rankings over {len(both)} methods: {kendall_tau_b(mine, theirs):+.2f}")
    unpaired = sorted(set(ours.index) - set(both))
    if unpaired:
        print(f"no published number here, left out: {', '.join(unpaired)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
