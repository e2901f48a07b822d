"""`ltbench plot` on fabricated run folders: each kind draws exactly the numbers in the run files."""
import numpy as np
import pytest
from matplotlib.figure import Figure

from ltbench.errors import ConfigError
from ltbench.metrics import reliability_bins
from ltbench.results.plots import make_plot
from tests.helpers import invoke, make_run

COUNTS = [144, 103, 74, 53, 38, 27, 19, 14, 10, 7]


def dasl_defaults() -> dict:
    """DaSL's declared defaults. No fallback: if methods/dasl.py fails to import (or is not registered as
    "dasl"), the import error fails the test that uses them."""
    from ltbench.methods.dasl import DaSL  # raises on a broken methods/dasl.py
    from ltbench.registry import load_methods

    assert load_methods().get("dasl").obj is DaSL
    return dict(DaSL.defaults)


def logits_for(seed: int, classes: int = 10, n: int = 300):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(classes), n // classes)
    logits = rng.normal(size=(n, classes)) * 2
    logits[np.arange(n), labels] += rng.uniform(0, 4, size=n)
    return logits.astype(np.float32), labels


def digits_run(results, name, method, seed, acc, per_class=None, **kwargs):
    logits, labels = logits_for(seed + 10 * len(method))
    return make_run(results, name, method, seed, acc, dataset="digits-lt", imbalance=20.0, recipe="smoke",
                    per_class=per_class if per_class is not None else [acc] * 10, train_counts=COUNTS,
                    logits=logits, labels=labels, **kwargs)


@pytest.fixture()
def ablation_runs(tmp_path):
    defaults = dasl_defaults()
    switch_a, switch_b = sorted(defaults)[:2]
    flipped = {k: (not v if isinstance(v, bool) else f"not-{v}") for k, v in defaults.items()}
    runs = {"dasl": ({}, [60.0, 62.0]), switch_a: ({switch_a: flipped[switch_a]}, [55.0, 58.0]),
            switch_b: ({switch_b: flipped[switch_b]}, [50.0, 50.0])}
    for name, (changed, accs) in runs.items():
        for seed, acc in enumerate(accs):
            digits_run(tmp_path, f"{name}-{seed}", "dasl", seed, acc, options={**defaults, **changed})
    for method, accs in {"ce": [40.0, 44.0], "crt": [52.0, 53.0]}.items():
        for seed, acc in enumerate(accs):
            digits_run(tmp_path, f"{method}-{seed}", method, seed, acc)
    return tmp_path, switch_a, switch_b


def _bars(container):
    heights = [patch.get_height() for patch in container.patches]
    segments = container.errorbar.lines[2][0].get_segments()
    return heights, [(seg[1][1] - seg[0][1]) / 2 for seg in segments]


def test_ablation_bars_and_error_bars(ablation_runs):
    results, switch_a, switch_b = ablation_runs
    fig = make_plot("ablation", results)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    groups = {container.get_label(): container for container in ax.containers if hasattr(container, "patches")}
    assert list(groups) == ["defaults", switch_a, switch_b, "baselines"]
    heights, errors = _bars(groups["defaults"])
    assert heights == pytest.approx([61.0]) and errors == pytest.approx([np.std([60, 62], ddof=1)])
    heights, errors = _bars(groups[switch_a])
    assert heights == pytest.approx([56.5]) and errors == pytest.approx([np.std([55, 58], ddof=1)])
    assert _bars(groups[switch_b]) == (pytest.approx([50.0]), pytest.approx([0.0]))
    heights, errors = _bars(groups["baselines"])
    assert heights == pytest.approx([42.0, 52.5]) and errors == pytest.approx([np.std([40, 44], ddof=1), 0.70710678])
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert ticks[0] == "dasl" and ticks[1].startswith(f"{switch_a}=") and ticks[-2:] == ["ce", "crt"]
    title = ax.get_title()
    assert "digits-LT IF20" in title and "smoke" in title and "2 seeds" in title
    assert ax.get_ylabel() == "top-1 accuracy (%)"


def test_ablation_axis_is_cut_only_when_the_bars_differ_little(ablation_runs, tmp_path):
    results, _, _ = ablation_runs
    assert make_plot("ablation", results).axes[0].get_ylim()[0] == 0  # 40-62 %: from 0
    narrow = tmp_path / "narrow"
    for seed, acc in enumerate([97.0, 97.4]):
        digits_run(narrow, f"dasl-{seed}", "dasl", seed, acc, options=dasl_defaults())
        digits_run(narrow, f"ce-{seed}", "ce", seed, acc - 0.6)
    ax = make_plot("ablation", narrow).axes[0]
    low, high = ax.get_ylim()
    assert 95 < low < 96.4 and 97.4 < high < 99  # the 0.6-point gap fills the plot
    assert ax.get_ylabel().startswith("top-1 accuracy (%), axis cut at 9")


def test_ablation_options_shared_by_every_dasl_run_are_not_switches(tmp_path):
    defaults = {**dasl_defaults(), "beta": 0.3}  # as a suite's [options.dasl] beta = 0.3 would give
    switch = "aux_inputs"
    digits_run(tmp_path, "dasl", "dasl", 0, 60.0, options=defaults)
    digits_run(tmp_path, "single", "dasl", 0, 55.0, options={**defaults, switch: "last"})
    ax = make_plot("ablation", tmp_path).axes[0]
    assert [c.get_label() for c in ax.containers if hasattr(c, "patches")] == ["defaults", switch]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["dasl", f"{switch}=last"]
    from ltbench.registry import METHODS

    if "dasl" in METHODS:  # against dasl's declared defaults, beta = 0.3 is said once, in the title
        assert "every dasl run: beta=0.3" in ax.get_title()


def test_ablation_needs_dasl_runs(tmp_path):
    digits_run(tmp_path, "ce", "ce", 0, 40.0)
    with pytest.raises(ConfigError, match="needs dasl runs"):
        make_plot("ablation", tmp_path)


def test_per_class_lines_over_train_count_bars(tmp_path):
    first, second = list(np.linspace(90, 0, 10)), list(np.linspace(80, 10, 10))
    digits_run(tmp_path, "ce-0", "ce", 0, 40.0, per_class=first)
    digits_run(tmp_path, "ce-1", "ce", 1, 42.0, per_class=second)
    digits_run(tmp_path, "crt-0", "crt", 0, 50.0, per_class=[50.0] * 10)
    fig = make_plot("per-class", tmp_path)
    ax, counts_ax = fig.axes
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert set(lines) == {"ce (smoke) (2 seeds)", "crt (smoke) (1 seed)"}
    np.testing.assert_allclose(lines["ce (smoke) (2 seeds)"].get_ydata(), (np.array(first) + second) / 2, atol=1e-3)
    np.testing.assert_allclose(lines["crt (smoke) (1 seed)"].get_xdata(), np.arange(10))
    assert [p.get_height() for p in counts_ax.patches] == COUNTS
    assert counts_ax.get_yscale() == "log" and "class index" in ax.get_xlabel()


def test_reliability_bins_from_the_saved_logits(tmp_path):
    for seed in (0, 1):
        digits_run(tmp_path, f"ce-{seed}", "ce", seed, 40.0, ece=3.0 + seed)
    digits_run(tmp_path, "crt-0", "crt", 0, 50.0, ece=7.25)
    fig = make_plot("reliability", tmp_path)
    axes = [ax for ax in fig.axes if ax.get_visible() and ax.get_ylabel() == "accuracy"]
    histograms = [ax for ax in fig.axes if ax.get_visible() and ax.get_ylabel() == "images"]
    assert len(axes) == 2 and len(histograms) == 2
    pooled = [logits_for(seed + 20) for seed in (0, 1)]  # digits_run seeds ce's logits with seed + 10 * 2
    logits = np.concatenate([p[0] for p in pooled]).astype(np.float64)
    labels = np.concatenate([p[1] for p in pooled])
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    expected = reliability_bins(probs.max(1), probs.argmax(1) == labels, 15)
    ce_ax = next(ax for ax in axes if ax.get_title().startswith("ce"))
    heights = [p.get_height() for p in ce_ax.containers[0].patches]
    np.testing.assert_allclose(heights, expected["accuracy"], atol=1e-6)
    assert len(heights) == 15 and "ECE 3.50% ± 0.71" in ce_ax.get_title()
    ce_counts = histograms[axes.index(ce_ax)]  # the histogram under ce's diagram: images per bin, log scale
    assert [p.get_height() for p in ce_counts.patches] == list(expected["count"]) and sum(expected["count"]) == 600
    assert ce_counts.get_yscale() == "log" and ce_counts.get_position().y1 < ce_ax.get_position().y0
    assert "ECE 7.25%" in next(ax for ax in axes if ax.get_title().startswith("crt")).get_title()
    assert ce_counts.get_xlabel() == "confidence" and "15 bins" in fig.get_suptitle()


def test_imbalance_lines_with_error_bars(tmp_path):
    values = {("ce", 10.0): [80.0, 82.0], ("ce", 100.0): [60.0, 61.0], ("ce", 50.0): [70.0, 70.0],
              ("crt", 100.0): [66.0, 68.0]}
    for (method, factor), accs in values.items():
        for seed, acc in enumerate(accs):
            make_run(tmp_path, f"{method}-{factor:g}-{seed}", method, seed, acc, imbalance=factor)
    fig = make_plot("imbalance", tmp_path)
    ax = fig.axes[0]
    lines = {c.get_label(): c for c in ax.containers}
    ce = lines["ce"]
    np.testing.assert_allclose(ce.lines[0].get_xdata(), [10, 50, 100])
    np.testing.assert_allclose(ce.lines[0].get_ydata(), [81.0, 70.0, 60.5])
    segments = ce.lines[2][0].get_segments()
    np.testing.assert_allclose([(s[1][1] - s[0][1]) / 2 for s in segments],
                               [np.std([80, 82], ddof=1), 0.0, np.std([60, 61], ddof=1)])
    np.testing.assert_allclose(lines["crt"].lines[0].get_ydata(), [67.0])
    assert ax.get_xscale() == "log" and "imbalance factor" in ax.get_xlabel() and "CIFAR-10-LT" in ax.get_title()


def test_cli_writes_png_and_pdf(tmp_path):
    digits_run(tmp_path, "ce-0", "ce", 0, 40.0)
    result = invoke("plot", "per-class", "--results", tmp_path)
    assert result.exit_code == 0, result.output
    png = tmp_path / "plots" / "per-class.png"
    assert png.read_bytes()[:4] == b"\x89PNG"
    pdf = tmp_path / "figs" / "rel.pdf"
    assert invoke("plot", "reliability", "--results", tmp_path, "--out", pdf).exit_code == 0
    assert pdf.read_bytes()[:4] == b"%PDF"
    result = invoke("plot", "histogram", "--results", tmp_path)
    assert result.exit_code != 0 and len(result.stderr.strip().splitlines()) == 1


def test_several_settings_get_a_panel_each(tmp_path):
    """The README's order: a quick-start run (recipe tiny), then the smoke sweep: per setting, not refused."""
    logits, labels = logits_for(0)
    for recipe, accs in {"tiny": [80.0, 70.0], "smoke": [40.0, 30.0]}.items():
        for method, acc in zip(("dasl", "ce"), accs):
            make_run(tmp_path, f"{method}-{recipe}", method, 0, acc, dataset="digits-lt", imbalance=20.0,
                     recipe=recipe, per_class=[acc] * 10, train_counts=COUNTS, logits=logits, labels=labels,
                     options=dasl_defaults() if method == "dasl" else None)
    make_run(tmp_path, "ce-cifar", "ce", 0, 60.0, recipe="tiny", per_class=[60.0] * 10, train_counts=COUNTS,
             logits=logits, labels=labels)
    expected = ["digits-LT IF20 · resnet32 · recipe smoke", "digits-LT IF20 · resnet32 · recipe tiny"]
    for kind in ("per-class", "reliability", "ablation"):
        messages = []
        fig = make_plot(kind, tmp_path, warn=messages.append)
        panels = fig.subfigs
        titles = [panel.get_suptitle() or panel.axes[0].get_title() for panel in panels]
        if kind == "ablation":  # no dasl run on CIFAR: left out, and said so
            assert len(panels) == 2 and messages == ["ablation plot: left out CIFAR-10-LT IF100 · resnet32 · recipe "
                                                     "tiny (no dasl runs)"]
        else:
            assert len(panels) == 3 and "CIFAR-10-LT IF100 · resnet32 · recipe tiny · 1 seed" in titles[0]
        assert all(name in title for name, title in zip(expected, titles[-2:])), titles
    per_class = make_plot("per-class", tmp_path)  # each panel draws its own runs only
    smoke = {line.get_label(): line.get_ydata()[0] for line in per_class.subfigs[1].axes[0].get_lines()}
    assert smoke == {"dasl (smoke) (1 seed)": 40.0, "ce (smoke) (1 seed)": 30.0}
    result = invoke("plot", "reliability", "--results", tmp_path)
    assert result.exit_code == 0, result.output
    single = make_plot("per-class", tmp_path, filters=["recipe=tiny", "dataset=digits-lt"])
    assert not single.subfigs and "recipe tiny" in single.axes[0].get_title()


def test_per_class_legend_leaves_the_tail_visible(tmp_path):
    for method in ("ce", "crt", "lws", "dasl"):  # tail classes right, at the top, where a legend used to sit
        digits_run(tmp_path, f"{method}-0", method, 0, 90.0, per_class=list(np.linspace(100, 90, 10)))
    fig = make_plot("per-class", tmp_path)
    fig.canvas.draw()  # Agg: lays the figure out as saved
    ax = fig.axes[0]
    legend = fig.legends[0].get_window_extent()
    assert len(fig.legends[0].get_texts()) == 4 and not legend.overlaps(ax.get_window_extent())
    assert legend.y1 < ax.get_window_extent().y0  # below the plot


def test_imbalance_plot_says_when_only_one_factor_is_present(tmp_path):
    make_run(tmp_path, "ce", "ce", 0, 60.0)
    make_run(tmp_path, "crt", "crt", 0, 66.0)
    messages = []
    ax = make_plot("imbalance", tmp_path, warn=messages.append).axes[0]
    assert "only IF 100 here" in ax.get_title() and len(messages) == 1 and "only IF 100" in messages[0]
    make_run(tmp_path, "ce-10", "ce", 0, 80.0, imbalance=10.0)
    messages.clear()
    assert "only IF" not in make_plot("imbalance", tmp_path, warn=messages.append).axes[0].get_title()
    assert not messages


# --- every method distinct, many methods readable (#31 item 6) -------------------------------------------

def _many_methods(results, n: int, counts=COUNTS) -> list[str]:
    """n methods m00, m01, ... on digits-LT, 1 seed each, method m's accuracy of class c: 50 + m + c."""
    names = [f"m{i:02d}" for i in range(n)]
    for i, name in enumerate(names):
        make_run(results, name, name, 0, 60.0, dataset="digits-lt", imbalance=20.0, recipe="smoke",
                 per_class=[50.0 + i + c for c in range(len(counts))], train_counts=counts, method_defaults={})
    return names


def _look(line) -> tuple:
    return (line.get_color(), line.get_marker(), line.get_linestyle())


def test_per_class_lines_each_look_different(tmp_path):
    _many_methods(tmp_path, 8)
    lines = make_plot("per-class", tmp_path).axes[0].get_lines()
    assert len(lines) == 8 and len({_look(line) for line in lines}) == 8
    assert len({line.get_color() for line in lines}) == 8 and len({line.get_marker() for line in lines}) == 7


def test_per_class_of_many_methods_is_a_heatmap_ordered_by_train_count(tmp_path):
    """18 methods: not 18 lines over 10 classes but methods x classes, the classes by train count (head first)."""
    counts = [14, 144, 74, 7, 103, 38, 53, 19, 10, 27]  # classes not in count order
    names = _many_methods(tmp_path, 18, counts)
    fig = make_plot("per-class", tmp_path)
    counts_ax, ax = fig.axes[:2]
    image = ax.get_images()[0]
    order = np.argsort(counts)[::-1]
    assert [t.get_text() for t in ax.get_xticklabels()] == [str(c) for c in order]
    assert [t.get_text() for t in ax.get_yticklabels()] == names  # the table's order, one row each
    np.testing.assert_allclose(image.get_array(), [[50.0 + i + c for c in order] for i in range(18)])
    assert [p.get_height() for p in counts_ax.patches] == sorted(counts, reverse=True)
    assert not ax.get_lines() and "Per-class accuracy" in fig.get_suptitle()
    assert len(ax.texts) == 18 * 10 and ax.texts[0].get_text() == f"{50 + order[0]:.0f}"  # the values, in cells


def test_imbalance_lines_each_look_different_and_nothing_is_clipped(tmp_path):
    for i in range(18):
        for factor in (10.0, 100.0):
            make_run(tmp_path, f"m{i:02d}-{factor:g}", f"m{i:02d}", 0, 70.0 - i - factor / 10, imbalance=factor,
                     method_defaults={})
    make_run(tmp_path, "digits", "ce", 0, 60.0, dataset="digits-lt", imbalance=20.0, recipe="smoke")
    fig = make_plot("imbalance", tmp_path, warn=lambda message: None)
    cifar, digits = fig.axes
    looks = [_look(container.lines[0]) for container in cifar.containers]
    assert len(looks) == 18 and len(set(looks)) == 18
    fig.draw_without_rendering()  # the constrained layout, as saving lays it out
    box = fig.bbox
    for ax in (cifar, digits):  # the second title line ("only IF 20 here: ...") fits in the figure
        title = ax.title.get_window_extent()
        assert box.x0 <= title.x0 and title.x1 <= box.x1, ax.get_title()
    assert "only IF 20" in digits.get_title()
    legend = fig.legends[0]
    assert len(legend.get_texts()) == 19 and not any(
        legend.get_window_extent().overlaps(ax.get_window_extent()) for ax in (cifar, digits))


def test_reliability_legend_explains_both_gaps(tmp_path):
    logits, labels = logits_for(3)
    logits[:, :] = 0.0  # every prediction at confidence 0.1 ...
    logits[np.arange(len(labels)), labels] = 0.3  # ... a little more on the true class: right, under-confident
    make_run(tmp_path, "under", "ce", 0, 100.0, dataset="digits-lt", imbalance=20.0, recipe="smoke",
             logits=logits, labels=labels)
    fig = make_plot("reliability", tmp_path)
    ax = next(ax for ax in fig.axes if ax.get_ylabel() == "accuracy")
    accuracy, over, under = ax.containers[:3]
    assert over.get_label().startswith("over-confident") and under.get_label().startswith("under-confident")
    confidence = np.exp(0.3) / (np.exp(0.3) + 9)
    filled = np.argmax([p.get_height() for p in accuracy.patches])
    assert accuracy.patches[filled].get_height() == pytest.approx(1.0)
    assert under.patches[filled].get_height() == pytest.approx(1.0 - confidence, abs=1e-6)
    assert under.patches[filled].get_y() == pytest.approx(confidence, abs=1e-6) and over.patches[filled].get_height() == 0
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["accuracy", over.get_label(), under.get_label()]
    assert under.patches[0].get_facecolor() != over.patches[0].get_facecolor()
