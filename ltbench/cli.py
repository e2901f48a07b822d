"""The `ltbench` command line (typer): thin commands that parse, call and print."""
from __future__ import annotations

import dataclasses
import functools
import time
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from .config import RECIPES, RunConfig, cli_parameter
from .engine.interrupt import TIME_LIMIT_ENV, TIME_LIMIT_EXIT, deadline_after
from .errors import ConfigError, LTBenchError
from .files import expand_user

RECIPE_NAMES = ", ".join(RECIPES)
DEFAULT = RunConfig()  # the defaults of `ltbench run`'s options that are RunConfig fields

app = typer.Typer(
    help="Benchmark harness for long-tailed image recognition: DaSL next to cRT, LWS, tau-norm, NCM and label "
         "smoothing on timm backbones, with paper-style tables and plots.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
)
err = Console(stderr=True)
out = Console()


def user_errors(command):
    """User mistakes end in one line on stderr and a non-zero exit code, never a traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            _expand_paths(kwargs)
            return command(*args, **kwargs)
        except LTBenchError as exc:
            err.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code)
        except KeyboardInterrupt:
            err.print("interrupted", markup=False)
            raise typer.Exit(130)

    return wrapper


def _expand_paths(kwargs: dict) -> None:
    """Every path parameter with its leading ``~`` expanded as a shell would (``--results '~'`` arrives quoted),
    also in the click context that ``run`` builds its RunConfig from: config.json records the real folder."""
    # `run` takes its click context (typer brings its own click: recognised by what it has, not its class)
    ctx = next((v for v in kwargs.values() if hasattr(v, "params") and hasattr(v, "command")), None)
    names = {p.name: max(p.opts, key=len) for p in (ctx.command.params if ctx is not None else [])
             if getattr(p, "param_type_name", "") == "option"}
    for name, value in kwargs.items():
        what = names.get(name, f"--{name.replace('_', '-')}")
        if isinstance(value, Path):
            value = expand_user(value, what)
        elif isinstance(value, (list, tuple)) and value and all(isinstance(v, Path) for v in value):
            value = type(value)(expand_user(v, what) for v in value)
        else:
            continue
        kwargs[name] = value
        if ctx is not None and name in ctx.params:
            ctx.params[name] = value


def parse_options(pairs: list[str] | None) -> dict:
    options = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise ConfigError(f"method option '{pair}' must look like KEY=VALUE (e.g. -o beta=0.3)")
        key, value = pair.split("=", 1)
        options[key.strip().replace("-", "_")] = value.strip()
    return options


def _results_folder(results: Path, deprecated_out: Path | None) -> Path:
    """``run --out DIR`` was the results folder; ``--results`` now names it in every command."""
    if deprecated_out is None:
        return results
    if results != Path("results") and results != deprecated_out:
        raise ConfigError(f"--out {deprecated_out} and --results {results} name two results folders; give only "
                          "--results (--out is its old spelling)")
    err.print("note: `ltbench run --out DIR` is deprecated; use --results DIR (the same option as in table, plot "
              "and sweep)", markup=False, highlight=False, soft_wrap=True)
    return deprecated_out


# `ltbench run` parameters that are no RunConfig field (every other one gives the field its metadata names)
RUN_ONLY = ("download", "out_dir", "quiet", "nproc")
# RunConfig fields whose CLI value is converted (the others are taken as given)
FROM_CLI = {
    "method_options": lambda pairs: parse_options(pairs),
    "out": str,
    "data_root": lambda root: str(root) if root else None,
    "plugins": lambda paths: [str(p) for p in paths or []],
    "retrain_before": lambda retrain: time.time() if retrain else None,  # --retrain: nothing cached before now
    "deadline": lambda limit: deadline_after(limit),  # --time-limit: counted from the start of this process
}


def run_config(params: dict) -> RunConfig:
    """The RunConfig of `ltbench run`'s parameters (``ctx.params``, with ``results`` resolved): every field from
    the parameter its metadata names (``config.setting(cli=...)``, else the field's own name)."""
    values = {f.name: params[cli_parameter(f.name)] for f in dataclasses.fields(RunConfig)}
    return RunConfig(**{name: FROM_CLI.get(name, lambda value: value)(value) for name, value in values.items()})


PLUGINS_HELP = "Extra folder (or .py file) of method plugins; repeatable. Also read from $LTBENCH_PLUGINS."
TIME_LIMIT_HELP = ("Time budget of this whole command, e.g. 2h20m, 90m, 45s or H:MM:SS (also $" + TIME_LIMIT_ENV + "), "
                   "counted from its start. At an epoch boundary, when the next epoch (estimated from the epochs "
                   "so far, with a margin) would not end inside it, the run saves a checkpoint and the command "
                   f"exits with status {TIME_LIMIT_EXIT} and the line that continues it. The numbers are those of "
                   "an uninterrupted run.")


@app.command()
@user_errors
def run(
    ctx: typer.Context,
    method: str = typer.Option(DEFAULT.method, "--method", "-m", help="Method name (see `ltbench methods`)."),
    dataset: str = typer.Option(DEFAULT.dataset, "--dataset", "-d", help="Dataset (see `ltbench datasets`); the "
                                "default, digits-lt, ships with scikit-learn and needs no download."),
    imbalance: Optional[float] = typer.Option(None, "--imbalance", help="Imbalance factor IF = max/min class "
                                              "count (LDAM-DRW rule); default: the dataset's."),
    profile: str = typer.Option(DEFAULT.profile, help="Long-tail profile: exp (LDAM-DRW) or step."),
    option: Optional[List[str]] = typer.Option(None, "--opt", "-o", help="Method option KEY=VALUE, repeatable "
                                                "(see `ltbench methods NAME`)."),
    backbone: Optional[str] = typer.Option(None, help="Any timm model name (resnet32 for CIFAR is ours); "
                                           "default: the dataset's."),
    pretrained: bool = typer.Option(DEFAULT.pretrained, help="Load timm's pretrained weights (downloads them)."),
    recipe: Optional[str] = typer.Option(None, help=f"Schedule preset: {RECIPE_NAMES}; default: the dataset's "
                                         "(`ltbench datasets`)."),
    epochs: Optional[int] = typer.Option(None, help="Stage-1 epochs (milestones and warm-up scale along)."),
    stage2_epochs: Optional[int] = typer.Option(None, help="Stage-2 epochs."),
    batch_size: Optional[int] = typer.Option(None, help="Batch size; the learning rate scales linearly with it."),
    lr: Optional[float] = typer.Option(None, help="Stage-1 base learning rate (before batch-size scaling)."),
    stage2_lr: Optional[float] = typer.Option(None, help="Stage-2 base learning rate."),
    seed: int = typer.Option(DEFAULT.seed, help="Training seed (model init, sampling, augmentation)."),
    subset_seed: int = typer.Option(DEFAULT.subset_seed, help="Seed of the long-tailed subset choice "
                                    "(docs/protocol.md: 0)."),
    val_per_class: Optional[int] = typer.Option(None, help="Validation images per class, held out of the balanced "
                                                "train pool before the long-tailed subset (default: the dataset's; "
                                                "0: none, and no method may tune)."),
    device: str = typer.Option(DEFAULT.device, help="cpu, cuda, cuda:N or auto."),
    precision: str = typer.Option(DEFAULT.precision, help="auto (bf16 where the hardware runs it natively), fp32, "
                                  "bf16, fp16."),
    data_root: Optional[Path] = typer.Option(None, help="Folder holding the data sets (default $LTBENCH_DATA or "
                                             "~/data)."),
    download: bool = typer.Option(False, help="Let torchvision download the data set if it is missing."),
    results: Path = typer.Option(Path(DEFAULT.out), "--results", help="Results folder: runs go to "
                                 "RESULTS/runs/<name>/, reusable stages to RESULTS/stages/<key>/."),
    out_dir: Optional[Path] = typer.Option(None, "--out", hidden=True, help="Deprecated spelling of --results."),
    run_name: Optional[str] = typer.Option(None, help="Run folder name (default: method-dataset-IF-seed-time)."),
    plugins: Optional[List[Path]] = typer.Option(None, "--plugins", help=PLUGINS_HELP),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or tables."),
    resume: bool = typer.Option(DEFAULT.resume, "--resume", help="Continue the unfinished run --run-name NAME from "
                                "its last checkpoint, with the settings in its config.json (options given again "
                                "must agree)."),
    nproc: int = typer.Option(1, "--nproc", help="Train with N processes on this machine (DistributedDataParallel"
                              ", one per GPU, or gloo on CPU): re-launches itself through torchrun. --batch-size stays "
                              "the global batch."),
    eval_batch_size: int = typer.Option(DEFAULT.eval_batch_size, "--eval-batch-size", min=1,
                                        help="Batch size of evaluation passes (no effect on what is computed; 256 keeps a "
                                        "32x32 batch's activations in memory the process reuses on CPU)."),
    workers: Optional[int] = typer.Option(None, "--workers", min=0, help="DataLoader workers per process for the "
                                          "file-list data sets (ImageNet-LT, Places-LT, iNat18); default: the cores "
                                          "this process may use, shared among the processes on this machine, less "
                                          "one."),
    compile_model: bool = typer.Option(DEFAULT.compile, "--compile", help="torch.compile the training forward pass "
                                       "(pays a warm-up of tens of seconds; worth it for long GPU runs)."),
    tensorboard: bool = typer.Option(DEFAULT.tensorboard, "--tensorboard", help="Also write the per-epoch scalars "
                                     "(loss, train accuracy, lr, img/s) and each stage's test metrics for TensorBoard "
                                     "into RUN/tensorboard/ (needs pip install 'ltbench[tensorboard]')."),
    retrain: bool = typer.Option(False, "--retrain", help="Train every stage afresh instead of reusing cached "
                                 "stage artifacts (which are then replaced); for changes the stage keys do not "
                                 "cover (see the README's 'Stage reuse')."),
    time_limit: Optional[str] = typer.Option(None, "--time-limit", envvar=TIME_LIMIT_ENV, show_envvar=False,
                                             metavar="DURATION", help=TIME_LIMIT_HELP),
    log_test_acc: bool = typer.Option(DEFAULT.test_every_epoch, "--log-test-acc", help="Evaluate the test set after "
                                      "every training epoch and log its top-1 as test_acc in epochs.jsonl; "
                                      "metrics.json then also names each stage's best epoch on test (best on test, "
                                      "as the references report: a choice made on the test set). Only a log: nothing "
                                      "is chosen with it and the run's numbers stay the same. A reused stage has no "
                                      "per-epoch log (it was trained by another run)."),
):
    """Train and evaluate one method; write results/runs/<name>/ and print the results table.

    Stages already trained with the same settings (same key) are reused, e.g. CE's stage 1 by cRT, LWS,
    tau-norm and NCM. A checkpoint is saved after every epoch and on SIGTERM / Ctrl-C: continue a stopped
    run with `--run-name NAME --resume`; --time-limit stops it the same way before a time budget runs out
    (exit status 75). For several GPUs: `--nproc N` or `torchrun --nproc_per_node=N -m ltbench run ...`.
    """
    from .engine.launch import explicit_options, relaunch_with_torchrun

    results = _results_folder(results, out_dir)
    from .engine.progress import Reporter
    from .engine.runner import execute

    if nproc < 1:
        raise ConfigError(f"--nproc must be >= 1, got {nproc}")
    config = run_config({**ctx.params, "results": results})  # checks --time-limit
    if nproc > 1:
        if config.deadline is not None:  # the processes torchrun starts get what is left of this one's budget
            ctx.params["time_limit"] = f"{max(config.deadline - time.time(), 1.0):.0f}s"
        raise typer.Exit(relaunch_with_torchrun(ctx, nproc))

    try:
        execute(config, Reporter(err, quiet=quiet), download=download,
                explicit=explicit_options(ctx) if resume else None)
    except LTBenchError as exc:  # one line however wide the message (soft_wrap), once under DDP
        if not getattr(exc, "reported_on_rank0", False):
            err.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(exc.exit_code)


# the order `ltbench methods` lists the families in (a method's ``family``; others come last, as "other")
FAMILIES = ("baseline", "re-weighting", "re-sampling", "margin", "logit adjustment", "decoupling", "augmentation",
            "DaSL")


def _method_declarations(name: str | None, plugins: list[Path] | None) -> list[dict]:
    """The declarations `ltbench methods` shows (ltbench.declarations): the built-ins' from their record,
    without importing them (nor torch); imported, as `run` does, when plugins or entry points add methods, when
    the record does not match the method files, or to name the closest methods to an unknown NAME."""
    import os
    from importlib.metadata import entry_points

    from .declarations import builtin, describe
    from .registry import PLUGIN_ENV, load_methods

    added = plugins or os.environ.get(PLUGIN_ENV) or entry_points(group="ltbench.methods")
    declared = None if added else builtin()
    if declared is not None and (name is None or name in declared):
        return [declared[name]] if name else list(declared.values())
    registry = load_methods([str(p) for p in plugins or []])
    for problem in registry.load_errors:
        err.print(f"warning: {problem}", markup=False, highlight=False, soft_wrap=True)
    return [describe(registry.get(name))] if name else [describe(entry) for entry in registry.entries()]


def _summary_text(declared: dict) -> Text:
    summary = Text(declared["summary"])
    if declared["reference"]:
        summary.append(f"\nreference: {declared['reference']}", style="dim")
    return summary


def _print_method(declared: dict) -> None:
    """`ltbench methods NAME`: what the method is, its stages and its options, every word shown."""
    def line(text: str | Text, style: str = "") -> None:  # prose wraps at a terminal, one line otherwise
        out.print(text if isinstance(text, Text) else Text(text, style=style), soft_wrap=not out.is_terminal)

    line(Text.assemble((declared["name"], "bold"), f" · {declared['family'] or 'other'} · {declared['origin']}"))
    line(_summary_text(declared))
    stages = declared["stages"]
    if isinstance(stages, str):  # "(cannot list: ...)"
        line(f"stages: {stages}")
    else:
        line("stages under the paper recipe (trainable, sampler):")
        for i, stage in enumerate(stages, start=1):
            line(f"  {i}. {stage['name']} ({stage['trainable']}, {stage['sampler']})")
    if not declared["options"]:
        line("options: none")
        return
    from .terminal import fit_prose, print_whole

    options = Table(title=f"options of {declared['name']} (set with -o KEY=VALUE)")
    for column in ("option", "default", "allowed", "meaning"):
        options.add_column(column, no_wrap=True)
    for option in declared["options"]:
        allowed = option["allowed"].replace(" | ", " |\n") if out.is_terminal else option["allowed"]  # a choice a line
        options.add_row(Text(option["option"]), Text(option["default"]), Text(allowed), Text(option["meaning"]))
    fit_prose(options, out, [3], least=20)  # the meaning wraps on a terminal
    print_whole(options, out)


@app.command()
@user_errors
def methods(
    name: Optional[str] = typer.Argument(None, help="Show one method's summary, stages and options."),
    plugins: Optional[List[Path]] = typer.Option(None, "--plugins", help=PLUGINS_HELP),
):
    """List the methods (built-in, entry points, plugin files) with summary, stages and origin.

    Piped or written to a file, every line is whole (summary and reference in full, one line each); on a
    terminal the list fits its width: names and stages whole, the summary and reference cut with "…"
    (`ltbench methods NAME` or a pipe shows them in full).
    """
    from rich import box

    from .terminal import fit_prose, print_whole

    declared = _method_declarations(name, plugins)
    if name:
        _print_method(declared[0])
        return
    order = {family: i for i, family in enumerate(FAMILIES)}
    declared.sort(key=lambda d: (order.get(d["family"], len(order)), d["name"]))
    families = [d["family"] or "other" for d in declared]
    compact = out.is_terminal  # one section per family, no family column
    with_origin = not compact or any(d["origin"] != "built-in" for d in declared)
    summary = "summary (reference implementation)"
    if compact:
        table = Table(title="ltbench methods", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False,
                      collapse_padding=True)
        columns = ["method", "stages", summary] + ["origin"] * with_origin
    else:
        table = Table(title="ltbench methods")
        columns = ["method", "family", summary, "stages", "origin"]
    for column in columns:
        table.add_column(column, no_wrap=True)
    for i, entry in enumerate(declared):
        stages = entry["stages"] if isinstance(entry["stages"], str) else \
            (" ->\n" if compact else " -> ").join(stage["name"] for stage in entry["stages"])
        origin = [Text(entry["origin"])] * with_origin
        if compact:
            if i == 0 or families[i - 1] != families[i]:
                table.add_row(Text(families[i], style="bold"))
            table.add_row(Text(entry["name"]), Text(stages), _summary_text(entry), *origin)
        else:
            last_of_family = i + 1 == len(declared) or families[i + 1] != families[i]  # a rule between families
            table.add_row(Text(entry["name"]), Text(families[i]), _summary_text(entry), Text(stages), *origin,
                          end_section=last_of_family)
    fit_prose(table, out, [columns.index(summary)], least=len(summary), one_line=True)
    print_whole(table, out)


@app.command()
@user_errors
def datasets(
    data_root: Optional[Path] = typer.Option(None, help="Folder to look in (default $LTBENCH_DATA or ~/data)."),
):
    """List the datasets, whether each is found under the data root, where it looked and how to get it."""
    from .data import default_data_root
    from .registry import DATASETS

    root = data_root or default_data_root()
    table = Table(title=f"ltbench datasets (data root: {root})")
    for column in ("dataset", "classes", "found", "looked in / how to get it", "defaults"):
        table.add_column(column, overflow="fold")
    for entry in DATASETS.entries():
        source = entry.obj()
        found = source.find(Path(root))
        looked = ", ".join(str(p) for p in source.candidates(Path(root)))
        where = str(found) if found else f"looked in {looked}. {source.how_to_get()}"
        defaults = (f"IF {source.default_imbalance:g}, " if not source.long_tailed_pool else "published split, ") + \
            f"{source.default_backbone}, recipe {source.default_recipe}"
        table.add_row(entry.name, str(source.num_classes), "yes" if found else "no", where, defaults)
    out.print(table)


RESULTS_HELP = "Results folder holding runs/<name>/ (as written by `ltbench run --results`)."
FILTER_HELP = "Only runs whose config.json has KEY=VALUE (e.g. method=crt, imbalance=100, method_options.beta=0.3); " \
              "repeatable: different keys must all match, a repeated key matches any of its values."


def _warn(message: str) -> None:
    err.print(f"warning: {message}", markup=False, highlight=False, soft_wrap=True)


@app.command()
@user_errors
def table(
    results: Path = typer.Option(Path("results"), "--results", help=RESULTS_HELP),
    layout: str = typer.Option("paper", help="paper: methods x (dataset, IF) of top-1, as CIFAR-LT papers print; "
                               "long: one row per method and setting with all / many / medium / few / ECE / seeds."),
    fmt: Optional[str] = typer.Option(None, "--format", help="rich, markdown, latex (booktabs) or csv; default: "
                                      "from the --out suffix (.md, .tex, .csv), else rich."),
    metric: str = typer.Option("acc", help="acc (top-1 accuracy) or error (100 - acc, the CIFAR-LT convention)."),
    filters: Optional[List[str]] = typer.Option(None, "--filter", help=FILTER_HELP),
    with_reference: bool = typer.Option(False, "--with-reference", help="Add the published numbers "
                                        "(BagofTricks-LT, MiSLAS, Kang et al.) where dataset, IF, backbone and "
                                        "recipe match the runs shown."),
    extra: Optional[List[str]] = typer.Option(None, "--extra", help="Long layout: add a column of this metric "
                                              "(repeatable): wrong_confidence (mean confidence of wrong "
                                              "predictions), feature_compactness (within-class over between-class "
                                              "squared distances of the test features; lower = more compact), nll, balanced_acc."),
    compare_to: Optional[str] = typer.Option(None, "--compare-to", metavar="METHOD", help="Add each row's top-1 "
                                             "difference to METHOD's (a row label without the recipe: crt, "
                                             "dasl\\[beta=0.3]) in the same setting, with a 95 % paired bootstrap "
                                             "interval over test images from test_logits.npz (seeds combined); "
                                             "* where the interval excludes 0."),
    replicates: int = typer.Option(2000, "--replicates", help="Bootstrap replicates of --compare-to."),
    best_epoch: bool = typer.Option(False, "--best-epoch", help="Add a column 'best ep. (on test)': the final "
                                    "stage's best epoch by test top-1, from runs made with `run --log-test-acc` "
                                    "(best on test, as the references report: a choice made on the test set; the "
                                    "other columns are the last epoch's). '-' where a seed did not log it."),
    out_file: Optional[Path] = typer.Option(None, "--out", help="Write the table to this file (atomically)."),
):
    """Mean ± std over seeds of every finished run, grouped by method (+ options), dataset, IF, backbone, recipe.

    Unfinished run folders are skipped with a warning. Rows of the cpu/smoke/tiny recipes say so in their
    label; the best value of each column among runs of the same recipe and backbone is bold. --compare-to says whether a difference is more than
    test-set noise.
    """
    from .results.tables import build_table, output_format, render, to_rich, write_table

    result = build_table(results, layout, metric, filters, with_reference, warn=_warn, extra=extra,
                         compare_to=compare_to, replicates=replicates, best_epoch=best_epoch)
    fmt = output_format(fmt, out_file)
    if out_file:
        write_table(result, out_file, fmt)
        err.print(f"wrote {out_file}", markup=False, highlight=False)
    elif fmt == "rich":
        from .terminal import print_whole

        print_whole(to_rich(result), out)  # whole at any width: a log never loses a digit or a name
    else:
        out.print(render(result, fmt), markup=False, highlight=False, end="", soft_wrap=True)


@app.command()
@user_errors
def plot(
    kind: str = typer.Argument(..., help="ablation, per-class, reliability or imbalance."),
    results: Path = typer.Option(Path("results"), "--results", help=RESULTS_HELP),
    out_file: Optional[Path] = typer.Option(None, "--out", help="A .png or .pdf file; default "
                                            "RESULTS/plots/KIND.png."),
    filters: Optional[List[str]] = typer.Option(None, "--filter", help=FILTER_HELP),
    metric: str = typer.Option("acc", help="What ablation and imbalance plot: acc, few_acc, ece, ... (a key of "
                               "metrics.json)."),
):
    """Plot finished runs: DaSL ablation bars, per-class accuracy over train counts, reliability diagrams
    (over the number of images per bin), accuracy vs imbalance factor. Means over seeds, sample-std error
    bars. Ablation, per-class and reliability draw one panel per dataset × IF, backbone and recipe found."""
    from .results.plots import make_plot, save_figure

    figure = make_plot(kind, results, filters, metric, warn=_warn)
    path = save_figure(figure, out_file or results / "plots" / f"{kind}.png")
    out.print(f"wrote {path}", markup=False, highlight=False)


@app.command()
@user_errors
def sweep(
    suite_file: Path = typer.Argument(..., metavar="SUITE.toml", help="Suite file (see benchmarks/SUITES.md)."),
    executor: str = typer.Option("local", help="local (this machine) or slurm (submitit, one job per run)."),
    jobs: Optional[int] = typer.Option(None, "--jobs", "-j", help="Runs at once: local worker processes sharing the "
                                       "cores (default 1, in this process), or slurm jobs queued at once (default "
                                       "all)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="List every run (done, or which stages it would train "
                                 "or reuse) and stop."),
    results: Path = typer.Option(Path("results"), "--results", help="Results folder the runs are written to."),
    data_root: Optional[Path] = typer.Option(None, help="Folder holding the data sets, for every run (overrides the "
                                             "suite's data_root; default: it, else $LTBENCH_DATA or ~/data)."),
    partition: Optional[str] = typer.Option(None, help="slurm partition."),
    gpus_per_job: int = typer.Option(1, help="slurm GPUs per run."),
    cpus_per_job: int = typer.Option(8, help="slurm CPUs per run (data loading workers + main process)."),
    timeout_min: int = typer.Option(24 * 60, help="slurm time limit per run, minutes."),
    mem_gb: Optional[int] = typer.Option(None, help="slurm memory per run, GB."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or per-run tables, only a line per "
                               "run started and finished."),
    retrain: bool = typer.Option(False, "--retrain", help="Run every run again (finished ones too) and train every "
                                 "stage afresh: no stage artifact from before this sweep is reused."),
    time_limit: Optional[str] = typer.Option(None, "--time-limit", envvar=TIME_LIMIT_ENV, show_envvar=False,
                                             metavar="DURATION", help=TIME_LIMIT_HELP.replace(
                                                 "the run saves", "each run in progress saves") + " Runs not yet "
                                             "started then wait; the same sweep command continues them all. Local "
                                             "executor only: under --executor slurm each job has --timeout-min and "
                                             "is requeued when it reaches it."),
):
    """Run a grid of runs from a TOML suite (schema: benchmarks/SUITES.md).

    Finished runs (same run key) are skipped and stopped ones resumed, so a second sweep does nothing and an
    interrupted one picks up where it stopped; runs sharing stage 1 train it once and reuse it. With
    --executor slurm the command submits one job per run and waits for them (runs that reuse a stage 1 go
    in once it exists); jobs already submitted keep running if it is stopped. With --time-limit the runs
    stop at an epoch boundary before the budget ends (exit status 75); the same command continues them.
    """
    from .sweep import SlurmOptions, describe, load_suite, plan_sweep, run_sweep

    def log(message: str) -> None:
        err.print(message, markup=False, highlight=False, soft_wrap=True)

    deadline = deadline_after(time_limit)
    if deadline is not None and executor != "local":
        raise ConfigError(f"--time-limit (or ${TIME_LIMIT_ENV}) bounds runs on this machine; with --executor "
                          f"{executor} each job has --timeout-min and is requeued when it reaches it: leave it out")
    suite = load_suite(suite_file, results, data_root)
    runs = plan_sweep(suite, results, executor, time.time() if retrain else None, deadline)
    if dry_run:
        for line in describe(runs, results):
            out.print(line, markup=False, highlight=False, soft_wrap=True)
        return
    from .engine.progress import Reporter

    counts = run_sweep(suite, runs, results, executor, jobs, SlurmOptions(partition, gpus_per_job, cpus_per_job,
                       timeout_min, mem_gb), Reporter(err, quiet=quiet), log)
    log(f"sweep '{suite.name}': {counts['done']} run(s) done, {counts['skipped']} already finished")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
