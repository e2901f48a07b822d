"""Does ltbench order the methods as the papers do? Our runs' top-1 (mean over seeds) beside the published
number of the same method, in the same configuration, on the same data set and imbalance; each list
ranked, and Kendall's tau-b between the two rankings.

    python benchmarks/ordering.py [--results results/cpu/cifar10-lt-if100] [--dataset cifar10-lt] [--imbalance 100]

Read the ranks, not the gaps: the committed CPU runs use the 30 + 10-epoch `cpu` recipe, and the published
numbers come from several sources with their own schedules (ltbench/results/reference.py names each, with
file, line and commit).

Like is paired with like. Our runs are those with the method's default options, or, where the published
number names the configuration it was measured with (BagofTricks-LT's tau-norm: tau 1, bias kept), runs of
exactly that. A pair whose two sides are not the same configuration (another loss form or gamma, another
schedule or network) is printed, labelled "another configuration: ...", and left out of the ranks and of
tau; so is a second published source for a configuration already counted. Methods without any published
number here are listed apart.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

GALLERY, MISLAS, MISLAS_PAPER, MENON = ("BagofTricks-LT gallery", "MiSLAS README", "MiSLAS paper (CVPR slides)",
                                        "Menon et al. README")

# (ltbench method, source, method as in ltbench/results/reference.py REFERENCES, why it is another
# configuration: "" where the pair is like with like as far as the method goes; a published entry's own
# `differs` (schedule, network) and `options` (the configuration it names) are checked as well)
PAIRS = [
    ("ce", GALLERY, "Baseline (CE)", ""),
    ("crt", GALLERY, "cRT (Classifier Re-training)", ""),
    ("lws", GALLERY, "LWS (Learnable Weight Scaling)", ""),
    ("tau-norm", GALLERY, "Tau_normalization", ""),
    ("label-smoothing", GALLERY, "CrossEntropyLabelSmooth", ""),
    ("focal", GALLERY, "Focal loss", "another configuration: sigmoid focal loss, gamma 2 (ours: softmax, gamma 1)"),
    ("cb", GALLERY, "ClassBalanceCE", ""),
    ("balanced-softmax", GALLERY, "BalancedSoftmaxCE", ""),
    ("mixup", MISLAS, "stage-1 mixup", ""),  # the reference of ltbench's mixup, 200 epochs
    ("mixup", GALLERY, "Input mixup", ""),  # 400 epochs (its `differs`)
    ("drw", GALLERY, "DRW, ClassBalanceCE", ""),
    ("ldam-drw", GALLERY, "DRW, LDAM loss", ""),
    ("drs", GALLERY, "DRS, Class-balanced sampling", ""),
    ("mislas", MISLAS, "MiSLAS", ""),
    ("mislas", MISLAS_PAPER, "MiSLAS", ""),  # the same configuration's paper figure: printed, counted once
    ("ce", MENON, "Baseline (ERM)", ""),  # Menon et al.'s own 1,241-epoch bottleneck ResNet-32 (`differs`)
    ("posthoc-la", MENON, "Post-hoc logit adjustment", ""),
    ("la-loss", MENON, "Logit adjustment loss", ""),
]


@dataclass
class Pair:
    method: str  # ltbench's method
    label: str  # ours, as tables label it (with the options of a named configuration)
    ours: float
    seeds: int
    published: float
    source: str  # "source: method"
    other: str  # "": counted; else why it is printed only
    our_rank: int | None = None
    published_rank: int | None = None


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


def _options_text(options) -> str:
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(options))


def pair_runs(runs, dataset: str, imbalance: float) -> tuple[list[Pair], list[str]]:
    """Every pair of PAIRS with runs here and a published number in this setting (counted ones first, by
    published number), and the methods with runs but no published number."""
    from ltbench.results.reference import REFERENCES

    refs = {(r.source, r.method): r for r in REFERENCES if r.dataset == dataset and r.imbalance == imbalance}
    runs = runs[runs["imbalance"] == imbalance]
    defaults = runs[runs["base"] == runs["method"]]
    pairs, counted_methods = [], set()
    for method, source, name, other in PAIRS:
        ref = refs.get((source, name))
        if ref is None:
            continue
        mine, label = defaults[defaults["method"] == method], method
        if ref.options:  # the configuration it names, where we have runs of it
            named = runs[[ref.pairs_with(m, o) for m, o in zip(runs["method"], runs["options"])]]
            if len(named):
                mine, label = named, named["base"].iloc[0]
            elif not other:
                other = f"another configuration: published with {_options_text(ref.options)}; ours the defaults"
        if mine.empty:
            continue
        if not other and ref.differs:
            other = f"another configuration: {ref.differs}"
        elif not other:
            other = "a second source for the same configuration: counted once" if method in counted_methods else ""
        counted_methods.update([method] if not other else [])
        pairs.append(Pair(method, label, float(mine["acc"].mean()), int(mine["seed"].nunique()), ref.acc,
                          f"{source}: {name}", other))
    counted = [p for p in pairs if not p.other]
    for p, ours, theirs in zip(counted, ranks([p.ours for p in counted]), ranks([p.published for p in counted])):
        p.our_rank, p.published_rank = ours, theirs
    pairs.sort(key=lambda p: (bool(p.other), p.published_rank or 0, -p.published))
    return pairs, sorted(set(defaults["method"]) - {p.method for p in pairs})


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", default=str(REPO / "results" / "cpu" / "cifar10-lt-if100"))
    parser.add_argument("--dataset", default="cifar10-lt")
    parser.add_argument("--imbalance", type=float, default=100)
    args = parser.parse_args(argv)
    from ltbench.results.runs import load_runs

    runs = load_runs(args.results, {"dataset": [args.dataset]}, warn=lambda line: print(line, file=sys.stderr))
    pairs, unpaired = pair_runs(runs, args.dataset, args.imbalance)
    counted = [p for p in pairs if not p.other]
    if len(counted) < 2:
        print(f"fewer than two methods with both our runs and a published number of the same configuration "
              f"under {args.results}")
        return 1
    print("| method | ours (seeds) | our rank | published | published rank | source: row | pairing |\n"
          "|:--|--:|--:|--:|--:|:--|:--|")
    for p in pairs:
        rank = (str(p.our_rank), str(p.published_rank)) if not p.other else ("-", "-")
        print(f"| {p.label} | {p.ours:.2f} ({p.seeds}) | {rank[0]} | {p.published:.2f} | {rank[1]} | {p.source} | "
              f"{p.other or 'same configuration'} |")
    tau = kendall_tau_b([p.ours for p in counted], [p.published for p in counted])
    print(f"\nKendall tau-b of the two rankings over {len(counted)} methods (same configuration only): {tau:+.2f}")
    if len(pairs) > len(counted):
        print(f"printed, left out of the ranks and tau: {len(pairs) - len(counted)} pairs (last column)")
    if unpaired:
        print(f"no published number here, left out: {', '.join(unpaired)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
