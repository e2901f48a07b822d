"""Suite files: read, validate and expand a TOML suite into its runs (the format: docs/sweeps.md).

Unknown keys, methods, options, datasets and recipes, and values of the wrong type, are errors that name
the key and the file, found before anything trains.
"""
from __future__ import annotations

import typing
from dataclasses import dataclass
from itertools import product
from pathlib import Path

from ..config import RunConfig, get_recipe, not_in_suites, setting_problem
from ..errors import ConfigError, NotFoundError, did_you_mean
from ..files import expand_user

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

AXIS_ALIASES = {"methods": "method", "datasets": "dataset", "seeds": "seed"}
SUITE_KEYS = ("name", "description", "options", "variants")
NOT_IN_SUITES = not_in_suites()  # set by the sweep (RunConfig field metadata, config.setting)
VARIANT_KEYS = ("name", "method", "options")


@dataclass
class Suite:
    """A validated suite file, expanded into its runs."""

    name: str
    path: Path
    runs: list[tuple[str, RunConfig]]  # (label, config)


def _check_type(path: Path, key: str, value, hint) -> None:
    types = tuple(t for t in (typing.get_args(hint) or (hint,)) if t is not type(None))
    types += (int,) if float in types else ()
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
        names = " or ".join(t.__name__ for t in types)
        raise ConfigError(f"{path}: '{key}' must be {names} (or a list of them), got {value!r}")


def _known(path: Path, name: str, registry) -> None:
    try:
        registry.get(name)
    except NotFoundError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def _read(path: Path) -> dict:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise NotFoundError(f"cannot read suite file {path} ({exc.strerror})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:  # TOML files are UTF-8 (TOML 1.0, "Spec")
        line = raw[:exc.start].count(b"\n") + 1
        raise ConfigError(f"{path}:{line}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}); "
                          f"save the suite file as UTF-8") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({' '.join(str(exc).split())})") from None
    except RecursionError:  # tomllib reads nested arrays and tables recursively
        raise ConfigError(f"{path}: arrays or tables nested too deeply to read (Python's recursion limit); a suite "
                          f"needs lists of values, not lists inside lists: fix the file") from None


def _settings(path: Path, suite: dict) -> dict:
    """The RunConfig fields of a suite (plural axis names resolved), each value or list item type-checked."""
    hints = typing.get_type_hints(RunConfig)
    allowed = [*SUITE_KEYS, *AXIS_ALIASES, *(f for f in hints if f not in NOT_IN_SUITES)]
    for key in suite:
        if key not in allowed:
            raise ConfigError(f"{path}: unknown key '{key}'" + did_you_mean(key, allowed, n=1))
    name = suite.get("name", "")
    if not isinstance(name, str):
        raise ConfigError(f"{path}: 'name' must be a string")
    if name and (name in (".", "..") or any(c in name for c in "/\\\0")):  # it names the sweep's log folder
        raise ConfigError(f"{path}: 'name' = {name!r} must be one folder name (no '/', '\\' or '..'): it names "
                          f"the folder of the sweep's logs under RESULTS/sweeps/")
    settings = {AXIS_ALIASES.get(k, k): v for k, v in suite.items() if k not in SUITE_KEYS}
    settings.setdefault("seed", [0])
    written = {AXIS_ALIASES.get(k, k): k for k in suite}  # the key as the file spells it (seeds, not seed)
    for key, value in settings.items():
        name = written.get(key, key)
        if key == "plugins":
            if not (isinstance(value, list) and all(isinstance(p, str) for p in value)):
                raise ConfigError(f"{path}: 'plugins' must be a list of paths")
            continue
        if isinstance(value, list) and not value:  # the grid would have no runs, and "success" would mean nothing
            raise ConfigError(f"{path}: '{name}' is an empty list, so the suite has no runs; give at least one "
                              f"value (or leave '{name}' out for its default)")
        for item in _as_list(value):
            _check_type(path, name, item, hints[key])
            problem = setting_problem(key, item)
            if problem:
                raise ConfigError(f"{path}: '{name}' = {item!r}: {problem}")
    return settings


def _entries(path: Path, suite: dict, methods: list[str], registry) -> list[tuple[str, str, dict]]:
    """(name, method, options) of every method and variant, options checked by the method itself."""
    method_options, variants = suite.get("options", {}), suite.get("variants", [])
    if not (isinstance(method_options, dict) and all(isinstance(o, dict) for o in method_options.values())):
        raise ConfigError(f"{path}: 'options' must be tables [options.METHOD] of option = value")
    if not (isinstance(variants, list) and all(isinstance(v, dict) for v in variants)):
        raise ConfigError(f"{path}: 'variants' must be [[variants]] tables (name, method, options)")
    entries = [(m, m, dict(method_options.get(m, {}))) for m in methods]
    where = {m: f"[options.{m}]" if method_options.get(m) else f"method '{m}'" for m in methods}
    for number, variant in enumerate(variants, 1):
        if set(variant) - set(VARIANT_KEYS) or "name" not in variant or "method" not in variant:
            raise ConfigError(f"{path}: each [[variants]] needs name and method (and may have options); "
                              f"got keys {', '.join(sorted(variant))}")
        for key, kind, example in (("name", str, 'name = "tau1"'), ("method", str, 'method = "tau-norm"'),
                                   ("options", dict, "options = { tau = 1.0 }")):
            if key in variant and not isinstance(variant[key], kind):
                raise ConfigError(f"{path}: [[variants]] number {number}: '{key}' must be a "
                                  f"{'string' if kind is str else 'table'}, got {variant[key]!r} (e.g. {example})")
        entries.append((variant["name"], variant["method"],
                        {**method_options.get(variant["method"], {}), **variant.get("options", {})}))
        where[variant["name"]] = f"[[variants]] '{variant['name']}'"
    if not entries:
        raise ConfigError(f"{path}: no runs: give methods = [...] or [[variants]]")
    names = [name for name, _, _ in entries]
    if len(set(names)) < len(names):
        raise ConfigError(f"{path}: run names must be unique, got {', '.join(n for n in names if names.count(n) > 1)}")
    for method in [m for _, m, _ in entries] + list(method_options):
        _known(path, method, registry)
    for name, method, options in entries:
        try:
            registry.get(method).obj(**options)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {where[name]}: {exc}") from None
    return entries


def load_suite(path: str | Path, results: str | Path = "results", data_root: str | Path | None = None) -> Suite:
    """Read, validate and expand a suite file into (label, RunConfig) pairs writing to ``results``; a
    ``data_root`` given here (``sweep --data-root``) replaces the suite's."""
    from ..data import DATASETS
    from ..registry import load_methods

    path = Path(path)
    suite = _read(path)
    settings = _settings(path, suite)
    entries = _entries(path, suite, _as_list(settings.pop("method", [])), load_methods(settings.get("plugins")))
    for dataset in _as_list(settings.get("dataset", [])):
        _known(path, dataset, DATASETS)
    for recipe in _as_list(settings.get("recipe", [])):
        try:
            get_recipe(recipe)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None
    axes = {k: v for k, v in settings.items() if isinstance(v, list) and k != "plugins"}
    fixed = {k: v for k, v in settings.items() if k not in axes}
    if data_root is not None:  # not part of any key (the data's fingerprint is): finished runs stay finished
        axes.pop("data_root", None)
        fixed["data_root"] = str(expand_user(data_root, "--data-root").resolve())
    out = str(expand_user(results, "--results").resolve())  # jobs may start in another working directory
    runs = []
    for name, method, options in entries:
        for values in product(*axes.values()):
            grid = dict(zip(axes, values))
            config = RunConfig(method=method, method_options=dict(options), out=out, **fixed, **grid)
            runs.append((_label(name, config, grid), config))
    return Suite(suite.get("name", path.stem), path, runs)


def _as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def _label(name: str, config: RunConfig, grid: dict) -> str:
    parts = [name, config.dataset] + ([f"IF{config.imbalance:g}"] if config.imbalance is not None else [])
    parts += [f"{k}={v}" for k, v in grid.items() if k not in ("dataset", "imbalance", "seed")]
    return " ".join(parts + [f"seed {config.seed}"])
