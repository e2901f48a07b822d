"""benchmarks/ordering.py pairs like with like: a published number of another configuration (loss form,
schedule, network, or the named tau-norm configuration) is printed and labelled, never ranked."""
import importlib.util
import sys

from ltbench.results.runs import load_runs
from tests.helpers import REPO, make_run

spec = importlib.util.spec_from_file_location("ordering", REPO / "benchmarks" / "ordering.py")
ordering = sys.modules["ordering"] = importlib.util.module_from_spec(spec)  # dataclasses look it up
spec.loader.exec_module(ordering)

TAU_NORM = {"tau": -1.0, "grid_step": 0.1, "bias": "drop"}


def fabricate(results, accs: dict[str, float]) -> None:
    for method, acc in accs.items():
        options = TAU_NORM if method == "tau-norm" else {}
        make_run(results, method, method, 0, acc, options=options, method_defaults=options)


def test_other_configurations_are_printed_but_left_out_of_the_ranks_and_tau(tmp_path, capsys):
    fabricate(tmp_path, {"ce": 60.0, "crt": 70.0, "mixup": 50.0, "focal": 65.0, "la-loss": 72.0, "tau-norm": 66.0,
                         "mislas": 71.0, "ncm": 69.0})
    pairs, unpaired = ordering.pair_runs(load_runs(tmp_path), "cifar10-lt", 100)
    counted = {p.source: p for p in pairs if not p.other}
    assert set(counted) == {"BagofTricks-LT gallery: Baseline (CE)", "BagofTricks-LT gallery: cRT (Classifier "
                            "Re-training)", "MiSLAS README: stage-1 mixup", "MiSLAS README: MiSLAS"}
    assert [counted[s].published_rank for s in ("MiSLAS README: MiSLAS", "MiSLAS README: stage-1 mixup")] == [1, 3]
    other = {p.source: p.other for p in pairs if p.other}
    assert other["BagofTricks-LT gallery: Focal loss"].startswith("another configuration: sigmoid focal loss, gamma 2")
    assert other["BagofTricks-LT gallery: Input mixup"] == "another configuration: 400 epochs"
    assert other["Menon et al. README: Logit adjustment loss"].startswith("another configuration: 1,241 epochs")
    assert other["Menon et al. README: Baseline (ERM)"].startswith("another configuration: 1,241 epochs")
    assert other["BagofTricks-LT gallery: Tau_normalization"] == \
        "another configuration: published with bias=keep, tau=1; ours the defaults"
    assert other["MiSLAS paper (CVPR slides): MiSLAS"] == "a second source for the same configuration: counted once"
    assert all(p.our_rank is None and p.published_rank is None for p in pairs if p.other)
    assert unpaired == ["ncm"]

    assert ordering.main(["--results", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "over 4 methods (same configuration only): +0.67" in out  # ours 71 70 60 50 vs 82.5 74.99 72.8 70.36
    assert "| focal | 65.00 (1) | - | 71.56 | - |" in out


def test_runs_of_a_named_configuration_are_ranked_against_it(tmp_path):
    fabricate(tmp_path, {"ce": 60.0, "crt": 70.0, "tau-norm": 66.0})
    make_run(tmp_path, "bot", "tau-norm", 0, 64.0, options={**TAU_NORM, "tau": 1.0, "bias": "keep"},
             method_defaults=TAU_NORM)
    pairs, _ = ordering.pair_runs(load_runs(tmp_path), "cifar10-lt", 100)
    tau_norm = next(p for p in pairs if p.source == "BagofTricks-LT gallery: Tau_normalization")
    assert (tau_norm.label, tau_norm.ours, tau_norm.other) == ("tau-norm[bias=keep,tau=1]", 64.0, "")
    assert (tau_norm.our_rank, tau_norm.published_rank) == (2, 2)  # 70 > 64 > 60; 74.99 > 72.70 > 70.36
