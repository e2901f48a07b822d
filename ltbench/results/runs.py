"""Run folders into a pandas frame: one row per finished run, labelled and aggregated over seeds.

Runs are grouped by everything that defines them except the seed: method and method options, dataset,
imbalance factor and long-tail profile, backbone and recipe. A recipe whose schedule was overridden
(``--epochs 1``) is shown as ``smoke[epochs=1]``, so shortened runs never average with full ones. A group
shows mean ± sample std (ddof=1; blank for one seed) over its seeds and how many there were; a seed that
ran twice counts once, by its newest run. Device and precision are not part of a group: bf16 and fp32 runs
of one setting are seeds of one experiment.

Options are labelled against the method's resolved defaults, recorded in each run's config.json
(``dasl[beta=0.3]``), so a label means the same whatever subset of runs a table shows and tables never
import plugin code (nor torch). Runs older than that record fall back to the built-in method's declared
``defaults`` (ltbench.declarations, read without importing the method), and any other method (a plugin) to
the most common value of each option among its runs. Rows of a recipe other than the papers' (``paper``, ``imagenet``)
carry it in their label (``ce (cpu)``): cpu numbers must never pass for paper numbers. Files are read
through ltbench.record.
"""
from __future__ import annotations

import json
import warnings
from collections import Counter
from pathlib import Path
from typing import Callable

import pandas as pd

from ..errors import ConfigError, NotFoundError
from ..record import (GROUPS, METRICS, METRICS_FILE, NUMERICS_VERSION, RecordError, RunRecord, is_finished, read,
                      run_folders)

PUBLISHED_RECIPES = ("paper", "imagenet")
SCHEDULE_OVERRIDES = ("epochs", "stage2_epochs", "batch_size", "lr", "stage2_lr")
METHOD_ORDER = ("ce", "label-smoothing", "crt", "lws", "tau-norm", "ncm", "dasl")  # baselines first, as papers do
DATASET_NAMES = {"cifar10-lt": "CIFAR-10-LT", "cifar100-lt": "CIFAR-100-LT", "imagenet-lt": "ImageNet-LT",
                 "places-lt": "Places-LT", "inat18": "iNat18", "digits-lt": "digits-LT", "mnist-lt": "MNIST-LT",
                 "fashion-mnist-lt": "Fashion-MNIST-LT"}
SETTING = ["dataset", "imbalance", "profile"]
GROUP_KEYS = ["label", "base", "method", "setting", *SETTING, "backbone", "recipe", "recipe_name"]
# the final stage's best epoch by test top-1 (metrics.json best_epoch_on_test, runs with --log-test-acc): what
# the references report; `table --best-epoch` shows it, labelled as a choice made on the test set
BEST_ON_TEST = "best_test_acc"
VALUES = (*METRICS, BEST_ON_TEST)
_MISSING = object()


def parse_filters(pairs: list[str] | None) -> dict[str, list[str]]:
    """``KEY=VALUE`` on config.json keys (dotted for nested ones: ``method_options.beta``); a key given
    twice matches either value."""
    filters: dict[str, list[str]] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"filter '{pair}' must look like KEY=VALUE (e.g. --filter method=crt)")
        filters.setdefault(key.strip(), []).append(value.strip())
    return filters


def _lookup(config: dict, dotted: str):
    value = config
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _matches(value, wanted: str) -> bool:
    if value is _MISSING:
        return False
    if isinstance(value, bool):
        return wanted.lower() in (("true", "on", "yes", "1") if value else ("false", "off", "no", "0"))
    if isinstance(value, (int, float)):
        try:
            return float(wanted) == float(value)
        except ValueError:
            return False
    return str(value) == wanted


def format_value(value) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return f"{value:g}" if isinstance(value, float) else str(value)


def compact_options(options: dict) -> str:
    return ",".join(f"{k}={format_value(v)}" for k, v in sorted(options.items()))


def _row(record: RunRecord) -> dict:
    folder, config, metrics = record.folder, record.config, record.metrics
    overrides = {k: config[k] for k in SCHEDULE_OVERRIDES if config.get(k) is not None}
    if record.numerics != NUMERICS_VERSION:  # another version's numbers: its own group, labelled
        overrides["numerics"] = record.numerics
    row = {"run": folder.name, "path": str(folder), "method": config["method"],
           "options": record.method_options, "method_defaults": record.method_defaults,
           "dataset": config["dataset"],
           "imbalance": config.get("imbalance"), "profile": config.get("profile", "exp"),
           "backbone": config["backbone"], "recipe_name": config["recipe"],
           "recipe": config["recipe"] + (f"[{compact_options(overrides)}]" if overrides else ""),
           "seed": config["seed"], "run_key": metrics.get("run_key")}
    row["setting"] = setting_name(row["dataset"], row["imbalance"], row["profile"])
    row.update({m: metrics.get(m) for m in METRICS})
    best = metrics.get("best_epoch_on_test")
    row[BEST_ON_TEST] = best.get("test_acc") if isinstance(best, dict) and _is_number(best.get("test_acc")) else None
    row.update({g: metrics["group_sizes"][g] for g in GROUPS})
    return row


def load_runs(results: str | Path, filters: dict[str, list[str]] | None = None,
              warn: Callable[[str], None] = warnings.warn) -> pd.DataFrame:
    """One row per finished run under ``<results>/runs/``, with ``label`` and ``base`` columns.

    A folder without metrics.json is unfinished (metrics.json is written last) and unreadable JSON is a
    half-copied folder: both are skipped with one ``warn`` line each, so a live sweep never breaks a table.
    """
    filters = filters or {}
    rows, seen_keys, read_any = [], set(), False
    for folder in run_folders(results):
        if not is_finished(folder):
            warn(f"skipped {folder}: unfinished (no {METRICS_FILE})")
            continue
        try:
            record = read(folder)
        except RecordError as exc:  # JSON, but not a run's
            warn(f"skipped {folder}: {exc}")
            continue
        except (OSError, ValueError) as exc:  # ValueError: not JSON, or not UTF-8
            warn(f"skipped {folder}: unreadable ({type(exc).__name__}: {' '.join(str(exc).split())})")
            continue
        problem = record.problem()
        if problem:
            warn(f"skipped {folder}: {problem}")
            continue
        row, config = _row(record), record.config
        read_any = True
        seen_keys.update(k for k in filters if _lookup(config, k) is not _MISSING)
        if all(any(_matches(_lookup(config, k), v) for v in values) for k, values in filters.items()):
            rows.append(row)
    unknown = sorted(set(filters) - seen_keys)
    if unknown and read_any:
        raise ConfigError(f"no run has the config key {', '.join(map(repr, unknown))}; filter on keys of "
                          f"config.json (method, dataset, imbalance, recipe, seed, method_options.NAME, ...)")
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    df[list(VALUES)] = df[list(VALUES)].astype(float)  # None (an empty shot group) -> NaN
    return newest_per_seed(add_labels(df), warn)


def newest_per_seed(df: pd.DataFrame, warn: Callable[[str], None]) -> pd.DataFrame:
    """One run per seed of a group: a seed that ran again (a rerun after a code change, a second results
    copy) is one sample, not two, so mean, std and ``seeds`` count it once. The newest run wins (run folders
    are named by their start time); each older one is named in a ``warn`` line."""
    by_name = df.sort_values("run")
    older = by_name.duplicated([*GROUP_KEYS, "seed"], keep="last")
    for run in by_name[older].itertuples():
        warn(f"skipped {run.path}: {run.label}, {run.setting}, seed {run.seed} ran again later; "
             f"tables count the newest run of a seed")
    return df.drop(index=by_name.index[older]).reset_index(drop=True)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _most_common(values: list):
    counts = Counter(json.dumps(v, sort_keys=True) for v in values)
    return json.loads(counts.most_common(1)[0][0])


def _builtin_defaults() -> dict[str, dict]:
    """The built-in methods' declared defaults: from their record (ltbench.declarations: no method file, no
    torch imported), or, where a method file was edited since the record was made, from the files."""
    from ..declarations import builtin

    declared = builtin()
    if declared is not None:
        return {name: dict(d.get("defaults") or {}) for name, d in declared.items()}
    from ..registry import METHODS, load_methods  # imports the method files, hence torch

    try:
        load_methods()
    except Exception:  # noqa: BLE001  a method file being written must not stop tables reading files
        pass
    return {e.name: dict(e.obj.defaults) for e in METHODS.entries() if e.origin == "built-in"}


def method_defaults(df: pd.DataFrame) -> dict[str, dict]:
    """Each method's default options as its runs recorded them (config.json ``method_defaults``), so tables
    never import torch and label old runs by the defaults of their own time; runs written before that
    record existed fall back to the built-in method's declared ``defaults``, else (a plugin: never imported
    here) the most common value per option."""
    defaults, builtins = {}, None
    recorded = df["method_defaults"] if "method_defaults" in df else pd.Series([None] * len(df), index=df.index)
    for method, group in df.groupby("method"):
        known = [d for d in recorded[group.index] if isinstance(d, dict)]
        if len(known) == len(group):
            defaults[method] = _most_common(known)
            continue
        builtins = _builtin_defaults() if builtins is None else builtins
        if method in builtins:
            defaults[method] = builtins[method]
        else:
            options = group["options"]
            keys = {k for o in options for k in o}
            defaults[method] = {k: _most_common([o.get(k) for o in options]) for k in keys}
    return defaults


def option_label(method: str, options: dict, defaults: dict) -> str:
    """``dasl[beta=0.3]``: the method with the options that differ from its defaults."""
    changed = {k: v for k, v in options.items() if defaults.get(k, _MISSING) != v}
    return f"{method}[{compact_options(changed)}]" if changed else method


def add_labels(df: pd.DataFrame) -> pd.DataFrame:
    """``base``: method[changed options]; ``label``: base plus the recipe where it is not a published one
    or several are shown, plus the backbone where several are shown. Rows come baselines first. Defaults are taken
    per setting: some follow the data set (cb's beta, 0.9 on CIFAR-100-LT: ``Method.dataset_defaults``)."""
    defaults = {setting: method_defaults(part) for setting, part in df.groupby("setting", sort=False)}
    df = df.copy()
    df["base"] = [option_label(m, o, defaults[s][m]) for m, o, s in zip(df["method"], df["options"], df["setting"])]
    several_recipes, several_backbones = df["recipe"].nunique() > 1, df["backbone"].nunique() > 1

    def label(row) -> str:
        parts = [row.recipe] if several_recipes or row.recipe not in PUBLISHED_RECIPES else []
        parts += [row.backbone] if several_backbones else []
        return row.base + (f" ({', '.join(parts)})" if parts else "")

    df["label"] = [label(row) for row in df.itertuples()]
    rank = {m: i for i, m in enumerate(METHOD_ORDER)}
    df["_rank"] = df["method"].map(lambda m: rank.get(m, len(rank)))
    return df.sort_values(["_rank", "label", "seed"]).drop(columns="_rank").reset_index(drop=True)


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """One row per group: ``<metric>_mean``, ``<metric>_std`` (ddof=1, NaN for one seed), ``seeds``,
    ``options`` (those its runs share) and ``best_test_acc_seeds``, how many of them logged their best epoch on
    test."""
    grouped = df.groupby(GROUP_KEYS, dropna=False, sort=False)
    stats = grouped[list(VALUES)].agg(["mean", "std"])
    stats.columns = [f"{metric}_{stat}" for metric, stat in stats.columns]
    stats["seeds"] = grouped.size()
    stats[f"{BEST_ON_TEST}_seeds"] = grouped[BEST_ON_TEST].count()
    for group in GROUPS:
        stats[group] = grouped[group].first()
    stats["options"] = grouped["options"].agg(common_options)
    return stats.reset_index()


def common_options(options: pd.Series) -> dict:
    """The method options every run of a group has with the same value (what a published number's
    configuration is checked against)."""
    first, *rest = list(options)
    return {k: v for k, v in (first or {}).items() if all(k in (o or {}) and o[k] == v for o in rest)}


def setting_name(dataset: str, imbalance, profile: str = "exp") -> str:
    """``CIFAR-10-LT IF100``: a column of the paper layout."""
    name = DATASET_NAMES.get(dataset, dataset)
    if imbalance is None or pd.isna(imbalance):
        return name
    return f"{name} IF{imbalance:g}" + (f" {profile}" if profile != "exp" else "")


def load_finished_runs(results: str | Path, filters: list[str] | None, warn: Callable[[str], None]) -> pd.DataFrame:
    """``load_runs``, failing with one clear line when nothing (matching) has finished."""
    df = load_runs(results, parse_filters(filters), warn)
    if df.empty:
        raise NotFoundError(f"no finished runs{' match the filters' if filters else ''} in {Path(results) / 'runs'}; "
                            f"run `ltbench run` or `ltbench sweep SUITE.toml` first, or pass --results DIR")
    return df
