"""The `ltbench` command line (typer): thin commands that parse, call and print."""
from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from .errors import ConfigError, LTBenchError

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
            return command(*args, **kwargs)
        except LTBenchError as exc:
            err.print(f"error: {exc}", markup=False, highlight=False)
            raise typer.Exit(exc.exit_code)
        except KeyboardInterrupt:
            err.print("interrupted", markup=False)
            raise typer.Exit(130)

    return wrapper


def parse_options(pairs: list[str] | None) -> dict:
    options = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise ConfigError(f"method option '{pair}' must look like KEY=VALUE (e.g. -o beta=0.3)")
        key, value = pair.split("=", 1)
        options[key.strip().replace("-", "_")] = value.strip()
    return options


PLUGINS_HELP = "Extra folder (or .py file) of method plugins; repeatable. Also read from $LTBENCH_PLUGINS."


@app.command()
@user_errors
def run(
    method: str = typer.Option("dasl", "--method", "-m", help="Method name (see `ltbench methods`)."),
    dataset: str = typer.Option("digits-lt", "--dataset", "-d", help="Dataset (see `ltbench datasets`); the "
                                "default, digits-lt, ships with scikit-learn and needs no download."),
    imbalance: Optional[float] = typer.Option(None, "--imbalance", help="Imbalance factor IF = max/min class "
                                              "count (LDAM-DRW rule); default: the dataset's."),
    profile: str = typer.Option("exp", help="Long-tail profile: exp (LDAM-DRW) or step."),
    option: Optional[List[str]] = typer.Option(None, "--opt", "-o", help="Method option KEY=VALUE, repeatable "
                                                "(see `ltbench methods NAME`)."),
    backbone: Optional[str] = typer.Option(None, help="Any timm model name (resnet32 for CIFAR is ours); "
                                           "default: the dataset's."),
    pretrained: bool = typer.Option(False, help="Load timm's pretrained weights (downloads them)."),
    recipe: Optional[str] = typer.Option(None, help="Schedule preset: paper, imagenet, cpu, smoke; default: the "
                                         "dataset's."),
    epochs: Optional[int] = typer.Option(None, help="Stage-1 epochs (milestones and warm-up scale along)."),
    stage2_epochs: Optional[int] = typer.Option(None, help="Stage-2 epochs."),
    batch_size: Optional[int] = typer.Option(None, help="Batch size; the learning rate scales linearly with it."),
    lr: Optional[float] = typer.Option(None, help="Stage-1 base learning rate (before batch-size scaling)."),
    stage2_lr: Optional[float] = typer.Option(None, help="Stage-2 base learning rate."),
    seed: int = typer.Option(0, help="Training seed (model init, sampling, augmentation)."),
    subset_seed: int = typer.Option(0, help="Seed of the long-tailed subset choice (PROTOCOL: 0)."),
    device: str = typer.Option("auto", help="cpu, cuda, cuda:N or auto."),
    precision: str = typer.Option("auto", help="auto (bf16 where the hardware runs it natively), fp32, bf16, fp16."),
    data_root: Optional[Path] = typer.Option(None, help="Folder holding the data sets (default $LTBENCH_DATA or "
                                             "~/data)."),
    download: bool = typer.Option(False, help="Let torchvision download the data set if it is missing."),
    out_dir: Path = typer.Option(Path("results"), "--out", help="Results folder: runs go to OUT/runs/<name>/, "
                                 "reusable stages to OUT/stages/<key>/."),
    run_name: Optional[str] = typer.Option(None, help="Run folder name (default: method-dataset-IF-seed-time)."),
    plugins: Optional[List[Path]] = typer.Option(None, "--plugins", help=PLUGINS_HELP),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or tables."),
):
    """Train and evaluate one method; write results/runs/<name>/ and print the results table.

    Stages already trained with the same settings (same key) are reused, e.g. CE's stage 1 by cRT, LWS,
    tau-norm and NCM.
    """
    from .config import RunConfig
    from .engine.progress import Reporter
    from .engine.runner import execute

    config = RunConfig(
        method=method, method_options=parse_options(option), dataset=dataset, imbalance=imbalance,
        profile=profile, backbone=backbone, pretrained=pretrained, recipe=recipe, epochs=epochs,
        stage2_epochs=stage2_epochs, batch_size=batch_size, lr=lr, stage2_lr=stage2_lr, seed=seed,
        subset_seed=subset_seed, device=device, precision=precision,
        data_root=str(data_root) if data_root else None, out=str(out_dir), run_name=run_name,
        plugins=[str(p) for p in plugins or []],
    )
    execute(config, Reporter(err, quiet=quiet), download=download)


@app.command()
@user_errors
def methods(
    name: Optional[str] = typer.Argument(None, help="Show one method's options and stages."),
    plugins: Optional[List[Path]] = typer.Option(None, "--plugins", help=PLUGINS_HELP),
):
    """List the methods (built-in, entry points, plugin files) with summary, stages and origin."""
    from .config import RECIPES
    from .registry import load_methods

    registry = load_methods([str(p) for p in plugins or []])
    for problem in registry.load_errors:
        err.print(f"warning: {problem}", markup=False, highlight=False)
    entries = [registry.get(name)] if name else registry.entries()
    table = Table(title="ltbench methods")
    for column in ("method", "summary", "stages", "origin"):
        table.add_column(column, overflow="fold")
    for entry in entries:
        try:
            stages = " -> ".join(f"{s.name}[{s.trainable}, {s.sampler}]" for s in entry.obj().stages(RECIPES["paper"]))
        except LTBenchError as exc:
            stages = f"(cannot list: {exc})"
        table.add_row(entry.name, entry.summary, stages, entry.origin)
    out.print(table)
    if name:
        cls = entries[0].obj
        options = Table(title=f"options of {name} (set with -o KEY=VALUE)")
        for column in ("option", "default", "choices", "meaning"):
            options.add_column(column, overflow="fold")
        for key, default in cls.defaults.items():
            choices = cls.choices.get(key)
            options.add_row(key, str(default), " | ".join(map(str, choices)) if choices else "",
                            cls.help.get(key, ""))
        out.print(options)


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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
