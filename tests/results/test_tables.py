"""`ltbench table` on fabricated run folders: aggregation over seeds, layouts, formats, references."""
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from ltbench.results.tables import build_table, load_runs, render, summarize
from tests.helpers import invoke, make_run


@pytest.fixture()
def cifar(tmp_path):
    """ce and crt on CIFAR-10-LT IF100 (3 and 2 seeds), IF50 and CIFAR-100-LT IF100 (1 seed each)."""
    for seed, acc in enumerate([70.0, 72.0, 74.5]):
        make_run(tmp_path, f"ce-{seed}", "ce", seed, acc, ece=10.0 + seed)
    for seed, acc in enumerate([75.0, 76.0]):
        make_run(tmp_path, f"crt-{seed}", "crt", seed, acc, ece=4.0)
    make_run(tmp_path, "ce-if50", "ce", 0, 74.0, imbalance=50.0)
    make_run(tmp_path, "crt-if50", "crt", 0, 73.0, imbalance=50.0)
    make_run(tmp_path, "ce-c100", "ce", 0, 38.0, dataset="cifar100-lt")
    return tmp_path


def test_mean_and_sample_std_over_seeds(cifar):
    summary = summarize(load_runs(cifar)).set_index(["label", "setting"])
    ce = summary.loc[("ce", "CIFAR-10-LT IF100")]
    # by hand: mean (70 + 72 + 74.5) / 3; squared deviations 4.694 + 0.028 + 5.444 = 10.1667, / (3 - 1)
    assert ce["acc_mean"] == pytest.approx(72.166667, abs=1e-5)
    assert ce["acc_std"] == pytest.approx(2.254625, abs=1e-5)
    assert ce["seeds"] == 3 and ce["ece_mean"] == pytest.approx(11.0)
    crt = summary.loc[("crt", "CIFAR-10-LT IF100")]
    assert crt["acc_mean"] == pytest.approx(75.5) and crt["acc_std"] == pytest.approx(0.707107, abs=1e-5)
    single = summary.loc[("ce", "CIFAR-10-LT IF50")]
    assert single["seeds"] == 1 and np.isnan(single["acc_std"])


def test_paper_layout_rows_columns_and_best(cifar):
    table = build_table(cifar, "paper")
    assert table.columns == ["method", "CIFAR-10-LT IF100", "CIFAR-10-LT IF50", "CIFAR-100-LT IF100"]
    assert [row[0] for row in table.rows] == ["ce", "crt"]
    ce, crt = table.rows
    assert ce[1].text(table.show_seeds) == "72.17 ± 2.25 [3]" and crt[1].text() == "75.50 ± 0.71"
    assert ce[2].text() == "74.00" and ce[2].std is None  # one seed: no std
    assert crt[3].mean is None  # crt has no CIFAR-100 run
    assert (ce[1].best, crt[1].best, ce[2].best, crt[2].best) == (False, True, True, False)
    assert not ce[3].best  # a lone value is not "best"
    markdown = render(table, "markdown")
    assert "| crt | **75.50 ± 0.71 [2]** | 73.00 [1] | - |" in markdown  # seed counts differ: shown per cell

    error = build_table(cifar, "paper", metric="error")
    assert error.rows[0][1].mean == pytest.approx(100 - 72.166667, abs=1e-5)
    assert error.rows[1][1].best and error.rows[0][2].best  # lowest error wins
    assert "error" in error.title


def test_long_layout_group_sizes_and_empty_groups(cifar):
    table = build_table(cifar, "long", filters=["dataset=cifar10-lt", "imbalance=100"])
    assert table.columns == ["method", "dataset", "backbone", "recipe", "all", "many (10)", "medium (0)", "few (0)",
                             "ECE", "seeds"]
    ce = table.rows[0]
    assert ce[:4] == ["ce", "CIFAR-10-LT IF100", "resnet32", "paper"] and ce[-1] == "3"
    assert ce[5].mean == pytest.approx(82.166667, abs=1e-5) and ce[6].text() == "-"
    assert table.rows[1][8].best  # lowest ECE: crt
    mixed = build_table(cifar, "long")
    assert "many" in mixed.columns and mixed.columns[-1] == "classes many/medium/few"
    assert [r[-1] for r in mixed.rows if r[1] == "CIFAR-100-LT IF100"] == ["35/35/30"]


def test_cpu_recipe_and_options_are_in_the_label(tmp_path):
    make_run(tmp_path, "ce-cpu", "ce", recipe="cpu")
    make_run(tmp_path, "ls", "label-smoothing", recipe="cpu", options={"epsilon": 0.2})
    make_run(tmp_path, "ls-short", "label-smoothing", recipe="cpu", epochs=5, options={"epsilon": 0.1})
    for seed, k in enumerate([1, 1, 2]):  # not importable here: the most common value is the default
        make_run(tmp_path, f"plugin-{seed}", "not-installed", seed, recipe="cpu", options={"k": k})
    labels = [row[0] for row in build_table(tmp_path, "paper").rows]
    assert labels == ["ce (cpu)", "label-smoothing (cpu[epochs=5])", "label-smoothing[epsilon=0.2] (cpu)",
                      "not-installed (cpu)", "not-installed[k=2] (cpu)"]
    assert build_table(tmp_path, "paper", with_reference=True).references == 0  # cpu numbers: no paper rows


def test_defaults_that_follow_the_data_set_label_each_setting_by_its_own(tmp_path):
    """cb's beta is 0.9 on CIFAR-100-LT and 0.9999 on CIFAR-10-LT (Method.dataset_defaults, #28 item 5): each is
    plain `cb` in its own column, and a changed value is still named."""
    for seed in (0, 1):
        make_run(tmp_path, f"cb-c10-{seed}", "cb", seed, options={"beta": 0.9999}, method_defaults={"beta": 0.9999})
        make_run(tmp_path, f"cb-c100-{seed}", "cb", seed, dataset="cifar100-lt", options={"beta": 0.9},
                 method_defaults={"beta": 0.9})
    make_run(tmp_path, "cb-c100-other", "cb", 0, dataset="cifar100-lt", options={"beta": 0.99},
             method_defaults={"beta": 0.9})
    labels = load_runs(tmp_path).groupby("setting")["label"].apply(set).to_dict()
    assert labels == {"CIFAR-10-LT IF100": {"cb"}, "CIFAR-100-LT IF100": {"cb", "cb[beta=0.99]"}}


def test_best_is_marked_among_runs_of_the_same_recipe_and_backbone(tmp_path):
    """#31 item 6: a quick-start tiny-recipe run beside a smoke sweep is not the smoke runs' "best" (nor a
    paper-recipe run, a shortened smoke run or another backbone): each (setting, backbone, recipe) has its own."""
    for name, method, acc, recipe, config in [
            ("ce-tiny", "ce", 80.0, "tiny", {}), ("dasl-tiny", "dasl", 78.0, "tiny", {}),
            ("ce-smoke", "ce", 40.0, "smoke", {}), ("dasl-smoke", "dasl", 45.0, "smoke", {}),
            ("crt-paper", "crt", 90.0, "paper", {}), ("crt-short", "crt", 70.0, "smoke", {"epochs": 1}),
            ("ce-r18", "ce", 60.0, "smoke", {"backbone": "resnet18"})]:
        make_run(tmp_path, name, method, 0, acc, recipe=recipe, method_defaults={}, **config)
    bold = {"ce (tiny, resnet32)", "dasl (smoke, resnet32)"}
    paper = build_table(tmp_path, "paper")
    assert {row[0] for row in paper.rows if row[1].best} == bold, [(r[0], r[1].best) for r in paper.rows]
    assert "best per column and recipe and backbone in bold" in paper.title
    long = build_table(tmp_path, "long")
    assert {row[0] for row in long.rows if row[4].best} == {"ce", "dasl"}  # ce at tiny, dasl at smoke
    assert {(row[0], row[3]) for row in long.rows if row[4].best} == {("ce", "tiny"), ("dasl", "smoke")}
    markdown = invoke("table", "--results", tmp_path, "--format", "markdown").stdout
    assert markdown.count("**") == 2 * 2 + 2  # two bold cells and the bold title


def test_references_only_where_the_setting_matches(cifar):
    make_run(cifar, "ce-cpu", "ce", recipe="cpu", imbalance=10.0)
    table = build_table(cifar, "paper", with_reference=True)
    labels = [row[0] for row in table.rows[-table.references:]]
    crt, mislas = "cRT (Classifier Re-training) [BagofTricks-LT gallery]", "MiSLAS [MiSLAS README]"
    assert crt in labels and mislas in labels and "MiSLAS [MiSLAS paper (CVPR slides)]" in labels
    assert not any("Kang" in label for label in labels)  # no ImageNet-LT run shown
    crt_ref = table.rows[-table.references:][labels.index(crt)]
    columns = dict(zip(table.columns[1:], crt_ref[1:]))
    assert columns["CIFAR-10-LT IF100"].mean == 74.99 and columns["CIFAR-10-LT IF50"].mean == 80.17
    assert columns["CIFAR-100-LT IF100"].mean == 40.26
    assert columns["CIFAR-10-LT IF10"].mean is None  # only cpu runs there: MiSLAS' IF10 number stays out
    assert not any(cell.best for row in table.rows[-table.references:] for cell in row[1:])
    long = build_table(cifar, "long", with_reference=True, filters=["dataset=cifar10-lt", "imbalance=100"])
    mislas = next(row for row in long.rows if row[0] == "MiSLAS [MiSLAS README]")
    assert mislas[4].mean == 82.5 and mislas[8].mean == 3.66
    paper = next(row for row in long.rows if row[0] == "MiSLAS [MiSLAS paper (CVPR slides)]")
    assert paper[4].mean == 82.1 and paper[8].mean == 3.70  # the paper's figure beside the README's


def test_a_published_configuration_pairs_only_with_runs_of_it(tmp_path):
    """BagofTricks-LT's tau-norm (tau 1, bias kept) stands beside tau-norm[bias=keep,tau=1] runs, not Kang's
    configuration (tau on validation, bias dropped) nor a run that keeps the bias with another tau."""
    gallery = "Tau_normalization [BagofTricks-LT gallery; beside tau-norm[bias=keep,tau=1]]"
    defaults = {"tau": -1.0, "grid_step": 0.1, "bias": "drop"}
    make_run(tmp_path, "ce", "ce", acc=70.0, method_defaults={})
    make_run(tmp_path, "kang", "tau-norm", acc=72.0, options=defaults, method_defaults=defaults)
    make_run(tmp_path, "keep-tuned", "tau-norm", acc=71.0, options={**defaults, "bias": "keep"},
             method_defaults=defaults)
    for layout in ("paper", "long"):
        table = build_table(tmp_path, layout, with_reference=True)
        labels = [row[0] for row in table.rows]
        assert "tau-norm" in labels and "tau-norm[bias=keep]" in labels and gallery not in labels, layout
        assert "Baseline (CE) [BagofTricks-LT gallery]" in labels  # entries without a configuration stay
    for seed in (0, 1):
        make_run(tmp_path, f"bot-{seed}", "tau-norm", seed, 73.0, options={**defaults, "tau": 1.0, "bias": "keep"},
                 method_defaults=defaults)
    for layout in ("paper", "long"):
        table = build_table(tmp_path, layout, with_reference=True)
        rows = {row[0]: row for row in table.rows}
        assert "tau-norm[bias=keep,tau=1]" in rows and gallery in rows, layout
        assert rows[gallery][1 if layout == "paper" else 4].mean == 72.70
    table = build_table(tmp_path, "paper", with_reference=True, filters=["method_options.bias=drop"])
    assert gallery not in [row[0] for row in table.rows]


def _check_latex(text: str) -> None:
    assert text.count("{") == text.count("}")
    depth = 0
    for ch in text:
        depth += {"{": 1, "}": -1}.get(ch, 0)
        assert depth >= 0
    for command in (r"\toprule", r"\midrule", r"\bottomrule", r"\begin{tabular}", r"\end{tabular}"):
        assert command in text
    body = text.split(r"\toprule")[1].split(r"\bottomrule")[0]
    rows = [line for line in body.splitlines() if line.endswith(r"\\")]
    columns = len(re.search(r"\\begin\{tabular\}\{(\w+)\}", text).group(1))
    assert rows and all(len(re.findall(r"(?<!\\)&", row)) == columns - 1 for row in rows)
    assert not re.search(r"(?<!\\)[_%#]", text.replace(r"\_", "").replace(r"\%", "").replace(r"\#", ""))


def test_latex_is_well_formed(cifar, tmp_path):
    make_run(cifar, "ls", "las", options={"smooth_head": 0.3, "smooth_tail": 0.05, "shape": "concave",
                                          "shift_bn": False, "lr_factor": 0.5, "epochs": 10})
    texts = [render(build_table(cifar, layout, with_reference=True), "latex") for layout in ("paper", "long")]
    for text in texts:
        _check_latex(text)
        assert r"\textbf{" in text and r"smooth\_tail=0.05" in text and r"$\pm$" in text
    if shutil.which("pdflatex") is None:
        return  # the structural checks above stand in for a real compile
    document = tmp_path / "table.tex"
    preamble = "\\documentclass{article}\\usepackage{booktabs}\\begin{document}\n"
    document.write_text(preamble + "".join(texts) + "\\end{document}\n")
    result = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", document.name],
                            cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout[-2000:]


def test_half_written_runs_are_skipped_with_a_warning(cifar):
    (cifar / "runs" / "unfinished").mkdir()
    (cifar / "runs" / "unfinished" / "config.json").write_text("{}")
    broken = make_run(cifar, "broken", "ce")
    (broken / "metrics.json").write_text('{"acc": 7')
    messages = []
    df = load_runs(cifar, warn=messages.append)
    assert len(df) == 8 and "broken" not in set(df["run"])
    assert len(messages) == 2 and "unfinished" in messages[1] and "broken" in messages[0]
    result = invoke("table", "--results", cifar)
    assert result.exit_code == 0
    assert result.stderr.count("warning:") == 2 and len(result.stderr.strip().splitlines()) == 2


@pytest.mark.parametrize("metric,written,shown", [
    ("acc", None, "no 'acc'"), ("acc", "NaN", "'acc' = nan"), ("acc", "250", "'acc' = 250"),
    ("acc", "1e308", "'acc' = 1e+308"), ("acc", "-1e308", "'acc' = -1e+308"), ("acc", "Infinity", "'acc' = inf"),
    ("few_acc", "-Infinity", "'few_acc' = -inf"), ("ece", "101", "'ece' = 101"), ("nll", "NaN", "'nll' = nan"),
    ("wrong_confidence", "2", "'wrong_confidence' = 2")])
def test_impossible_metrics_skip_the_run_with_a_warning(cifar, metric, written, shown):
    """#31 item 14: a hand-edited or foreign metrics.json (acc missing, NaN, 250, +-1e308, Infinity) is never
    tabulated, let alone bold as the best: the run is skipped with one line naming the file and the value."""
    run = make_run(cifar, "zz-impossible", "crt", 5, 76.0)
    metrics = json.loads((run / "metrics.json").read_text())
    text = json.dumps({k: v for k, v in metrics.items() if k != metric} if written is None else
                      {**metrics, metric: "VALUE"}).replace('"VALUE"', written or "")
    (run / "metrics.json").write_text(text)
    result = invoke("table", "--results", cifar, "--format", "markdown")
    assert result.exit_code == 0, result.output
    warning, = result.stderr.strip().splitlines()
    assert warning.startswith(f"warning: skipped {run}: {run / 'metrics.json'} has {shown}"), warning
    assert "| crt | **75.50 ± 0.71 [2]** |" in result.stdout  # the two real crt seeds, still the best
    assert "250" not in result.stdout and "inf" not in result.stdout and "nan" not in result.stdout


def test_a_seed_that_ran_twice_counts_once_by_its_newest_run(cifar):
    # a rerun of crt seed 1 after a code change: folder names end with the start time, the later one wins
    make_run(cifar, "crt-1-z-rerun", "crt", 1, 80.0, ece=4.0)
    messages = []
    crt = summarize(load_runs(cifar, warn=messages.append)).set_index(["label", "setting"]).loc[
        ("crt", "CIFAR-10-LT IF100")]
    assert crt["seeds"] == 2 and crt["acc_mean"] == pytest.approx((75.0 + 80.0) / 2)  # not (75 + 76 + 80) / 3
    assert len(messages) == 1 and "crt-1" in messages[0] and "seed 1 ran again" in messages[0]
    assert "crt-1-z-rerun" not in messages[0]
    result = invoke("table", "--results", cifar, "--format", "csv")
    assert result.exit_code == 0 and "crt,77.5," in result.stdout
    assert result.stderr.count("warning:") == 1


def test_cli_filters_formats_and_out_file(cifar, tmp_path):
    result = invoke("table", "--results", cifar, "--filter", "method=crt", "--format", "csv")
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("method,CIFAR-10-LT IF100,CIFAR-10-LT IF100 std") and lines[1].startswith("crt,75.5,")
    assert len(lines) == 2
    out = tmp_path / "tables" / "cifar.tex"
    result = invoke("table", "--results", cifar, "--layout", "long", "--out", out)
    assert result.exit_code == 0 and r"\toprule" in out.read_text()
    result = invoke("table", "--results", cifar, "--filter", "methd=crt")
    assert result.exit_code != 0 and "methd" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_no_runs_is_one_error_line(tmp_path):
    result = invoke("table", "--results", tmp_path)
    assert result.exit_code != 0
    assert result.stderr.startswith("error: no finished runs") and len(result.stderr.strip().splitlines()) == 1


def test_extra_columns_mean_std_three_decimals_and_best(tmp_path):
    for name, method, seed, wrong, compact in [("ce-0", "ce", 0, 0.72, 0.41), ("ce-1", "ce", 1, 0.70, 0.39),
                                               ("dasl-0", "dasl", 0, 0.56, 0.325), ("dasl-1", "dasl", 1, 0.58, 0.335)]:
        run = make_run(tmp_path, name, method, seed)
        metrics = json.loads((run / "metrics.json").read_text())
        (run / "metrics.json").write_text(json.dumps({**metrics, "wrong_confidence": wrong,
                                                      "feature_compactness": compact}))
    result = invoke("table", "--results", tmp_path, "--layout", "long", "--format", "markdown",
                    "--extra", "wrong_confidence", "--extra", "feature_compactness")
    assert result.exit_code == 0, result.output
    header, _, ce, dasl = result.stdout.strip().splitlines()[2:6]
    assert header.split(" | ")[-3:] == ["wrong conf.", "compactness", "seeds |"]
    assert ce.split(" | ")[-3:-1] == ["0.710 ± 0.014", "0.400 ± 0.014"]  # lower is better: dasl's are bold
    assert dasl.split(" | ")[-3:-1] == ["**0.570 ± 0.014**", "**0.330 ± 0.007**"]
    for args, message in [(("--extra", "acc"), "--extra acc: not a metric"), (("--extra", "nll"), "--layout long")]:
        result = invoke("table", "--results", tmp_path, *args)
        assert result.exit_code != 0 and message in result.stderr and len(result.stderr.strip().splitlines()) == 1


# --compare-to: differences with a paired bootstrap interval -------------------------------------------
def logits_right_on(right: np.ndarray, labels: np.ndarray, classes: int = 10) -> np.ndarray:
    """Logits whose prediction is the label exactly where ``right`` is True (the next class elsewhere)."""
    predicted = np.where(right, labels, (labels + 1) % classes)
    return np.eye(classes)[predicted] * 5.0


def compare_runs_on(results: Path, rights: dict[str, list[np.ndarray]], labels: np.ndarray, **kwargs) -> None:
    for method, per_seed in rights.items():
        for seed, right in enumerate(per_seed):
            make_run(results, f"{method}-{seed}", method, seed, 100.0 * right.mean(), logits=logits_right_on(
                right, labels), labels=labels, **kwargs)


def first_n(n: int, total: int = 1000) -> np.ndarray:
    return np.arange(total) < n


def test_paired_bootstrap_known_differences():
    from ltbench.results.significance import paired_bootstrap

    # A right on 50 more of 1000 images than B, never the other way: +5 points, se sqrt(.05 * .95 / 1000)
    wide = paired_bootstrap([first_n(750).astype(float) - first_n(700)])
    se = 100 * np.sqrt(0.05 * 0.95 / 1000)
    assert wide.difference == pytest.approx(5.0)
    assert wide.low == pytest.approx(5.0 - 1.96 * se, abs=0.25)  # a bootstrap of unpaired images: +-2.0
    assert wide.high == pytest.approx(5.0 + 1.96 * se, abs=0.25)
    assert wide.excludes_zero
    # 3 images only A gets right, 2 only B: +0.1 points, well inside test-set noise
    close = np.zeros(1000)
    close[[700, 701, 702]], close[[0, 1]] = 1, -1
    narrow = paired_bootstrap([close])
    assert narrow.difference == pytest.approx(0.1) and narrow.low < 0 < narrow.high and not narrow.excludes_zero
    # seeds combined: the mean of the per-seed differences, each seed's noise shrunk by the averaging
    both = paired_bootstrap([first_n(750).astype(float) - first_n(700), first_n(730).astype(float) - first_n(700)])
    se_both = 100 * np.sqrt(0.05 * 0.95 / 1000 + 0.03 * 0.97 / 1000) / 2
    assert both.difference == pytest.approx(4.0) and both.seeds == 2
    assert both.high - both.low == pytest.approx(2 * 1.96 * se_both, rel=0.15)
    assert paired_bootstrap([close]) == narrow  # a fixed generator: the same interval every time


def test_compare_to_marks_real_differences_only(tmp_path):
    labels = np.arange(1000) % 10
    close = first_n(703) & ~np.isin(np.arange(1000), [0, 1])  # 3 images more right, 2 fewer: +0.1
    compare_runs_on(tmp_path, {"crt": [first_n(700), first_n(700)], "dasl": [first_n(750), first_n(730)],
                               "lws": [close, close], "ce": [first_n(700), first_n(700)]}, labels)
    table = build_table(tmp_path, "long", compare_to="crt")
    assert table.columns[4:6] == ["all", "Δ vs crt"]
    cells = {row[0]: row[5] for row in table.rows}
    assert cells["crt"].text() == "reference"
    assert cells["dasl"].mean == pytest.approx(4.0) and cells["dasl"].text().endswith(" *")
    assert cells["lws"].mean == pytest.approx(0.1) and cells["lws"].low < 0 < cells["lws"].high
    assert not cells["lws"].text().endswith("*")
    assert cells["ce"].text() == "+0.00 [+0.00, +0.00]"  # the same predictions: exactly 0, not marked
    assert cells["ce"].mean == 0 and cells["ce"].low == 0 == cells["ce"].high
    error = build_table(tmp_path, "long", metric="error", compare_to="crt")
    dasl = next(row[5] for row in error.rows if row[0] == "dasl")
    assert (dasl.mean, dasl.low, dasl.high) == (-cells["dasl"].mean, -cells["dasl"].high, -cells["dasl"].low)

    markdown = invoke("table", "--results", tmp_path, "--compare-to", "crt", "--format", "markdown").stdout
    assert "| dasl | **74.00 ± 1.41** | +4.00 [+" in markdown and "paired bootstrap" in markdown.splitlines()[-1]
    assert markdown == invoke("table", "--results", tmp_path, "--compare-to", "crt", "--format", "markdown").stdout
    csv = invoke("table", "--results", tmp_path, "--compare-to", "crt", "--format", "csv").stdout.splitlines()
    assert csv[0].split(",")[3:8] == ["Δ vs crt", "Δ vs crt low", "Δ vs crt high", "Δ vs crt excludes 0",
                                      "Δ vs crt seeds"]
    assert next(line for line in csv if line.startswith("dasl,")).split(",")[3:] == [
        "4.0", f"{cells['dasl'].low}", f"{cells['dasl'].high}", "True", "2", ""]
    assert next(line for line in csv if line.startswith("crt,")).split(",")[3:] == ["", "", "", "", "", "reference"]
    _check_latex(render(table, "latex"))


def test_compare_to_says_why_a_row_has_no_interval(tmp_path):
    labels = np.arange(1000) % 10
    compare_runs_on(tmp_path, {"crt": [first_n(700)], "dasl": [first_n(750), first_n(750)]}, labels)
    make_run(tmp_path, "lws-0", "lws", 0, 69.0)  # no test_logits.npz
    compare_runs_on(tmp_path, {"ce": [first_n(600)]}, labels, imbalance=50.0)  # no crt run at IF50
    table = build_table(tmp_path, "paper", compare_to="crt")
    assert table.columns == ["method", "CIFAR-10-LT IF100", "Δ vs crt (CIFAR-10-LT IF100)", "CIFAR-10-LT IF50",
                             "Δ vs crt (CIFAR-10-LT IF50)"]
    rows = {row[0]: row for row in table.rows}
    assert rows["lws"][2].text() == "- (no test logits)" and rows["ce"][4].text() == "- (no crt run here)"
    assert rows["ce"][2].text() == "-" and rows["crt"][2].text() == "reference"
    assert rows["dasl"][2].text().endswith("* (1 of 2 seeds)")  # crt ran seed 0 only


def test_compare_to_refuses_other_test_sets_and_unknown_methods(tmp_path):
    labels = np.arange(1000) % 10
    compare_runs_on(tmp_path, {"crt": [first_n(700)]}, labels)
    compare_runs_on(tmp_path, {"dasl": [first_n(700)]}, np.roll(labels, 1))
    for args, message in [(("--compare-to", "crt"), "test labels differ (at 1000 of 1000 images)"),
                          (("--compare-to", "crt", "--filter", "method=dasl"), "no such method among the runs"),
                          (("--compare-to", "crt", "--replicates", "10"), "--replicates 10")]:
        result = invoke("table", "--results", tmp_path, *args)
        assert result.exit_code != 0 and message in result.stderr, result.output
        assert len(result.stderr.strip().splitlines()) == 1


def test_published_numbers_are_the_current_gallery_and_name_their_source():
    """The gallery rows are documents/trick_gallery.md at ce7859a (cao_cifar), 100 - error, not the superseded
    3ae52f4 copy (cui_cifar: focal 69.12, CB 70.20, Balanced Softmax 76.37, ...); every entry cites where."""
    from ltbench.results.reference import REFERENCES, SOURCES

    c10 = {(r.source, r.method): r for r in REFERENCES if r.dataset == "cifar10-lt" and r.imbalance == 100}
    gallery = {m: r for (s, m), r in c10.items() if s == "BagofTricks-LT gallery"}
    assert {m: r.acc for m, r in gallery.items()} == {
        "Baseline (CE)": 70.36, "cRT (Classifier Re-training)": 74.99, "LWS (Learnable Weight Scaling)": 72.63,
        "Tau_normalization": 72.70, "CrossEntropyLabelSmooth": 72.81, "Focal loss": 71.56, "ClassBalanceFocal": 75.20,
        "ClassBalanceCE": 70.48, "BalancedSoftmaxCE": 77.54, "Input mixup": 74.06, "DRW, ClassBalanceCE": 74.64,
        "DRW, LDAM loss": 77.73, "DRS, Class-balanced sampling": 75.07}
    assert all("@ce7859a, configs/cao_cifar/" in r.where for r in gallery.values())
    assert gallery["Input mixup"].differs == "400 epochs" and gallery["Focal loss"].where.endswith("re_weighting/focal/")
    assert all(r.source in SOURCES and r.where for r in REFERENCES)
    assert len({(r.label, r.dataset, r.imbalance) for r in REFERENCES}) == len(REFERENCES)  # labels are row names
    menon = [r for r in REFERENCES if r.source == "Menon et al. README"]
    assert {r.method for r in menon} == {"Baseline (ERM)", "Post-hoc logit adjustment", "Logit adjustment loss"}
    assert c10[("Menon et al. README", "Baseline (ERM)")].acc == 71.36
    assert all("another configuration: 1,241 epochs" in r.label for r in menon)
    mixup = c10[("MiSLAS README", "stage-1 mixup")]
    assert (mixup.acc, mixup.ece) == (72.8, 2.14)
    assert (c10[("MiSLAS README", "MiSLAS")].acc, c10[("MiSLAS paper (CVPR slides)", "MiSLAS")].acc) == (82.5, 82.1)
    ncm = next(r for r in REFERENCES if r.source == "Kang et al. README" and r.method == "NCM")
    assert (ncm.many_acc, ncm.medium_acc, ncm.few_acc, ncm.acc) == (56.6, 45.3, 28.1, 47.3)


def test_runs_of_an_older_numerics_version_are_their_own_labelled_group(tmp_path):
    """A run made before a change that moved the numbers (no "numerics" in its config.json: version 1) is never
    averaged with, compared with or set beside the published numbers of runs of the current version."""
    from ltbench.record import NUMERICS_VERSION

    results = tmp_path / "results"
    make_run(results, "ce-old", acc=60.0, recipe="cpu", numerics=None)
    make_run(results, "ce-new", acc=70.0, recipe="cpu", seed=1)
    summary = summarize(load_runs(results))
    assert sorted(summary["recipe"]) == ["cpu", "cpu[numerics=1]"] and list(summary["seeds"]) == [1, 1]
    old = summary[summary["recipe"] == "cpu[numerics=1]"].iloc[0]
    assert old["acc_mean"] == 60.0 and NUMERICS_VERSION > 1
