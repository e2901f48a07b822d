"""One small registry used for methods and datasets (backbones use timm's own registry).

Modelled on timm's ``register_model`` / ``create_model``: a decorator registers a factory under a
name (a name registered twice warns, and the later one wins), ``create_method`` builds a method, unknown
names fail with the closest matches.
"""
from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import keyword
import os
import pkgutil
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from .errors import NotFoundError, did_you_mean

if TYPE_CHECKING:
    from .method import Method


@dataclass
class Entry:
    name: str
    obj: Any
    summary: str = ""
    origin: str = "built-in"


class Registry:
    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry] = {}
        self.load_errors: list[str] = []  # plugin files that failed to import (one line each)
        self._origin = "built-in"

    def register(self, name: str, summary: str = "") -> Callable:
        """Decorator registering ``obj`` under ``name``. A name registered before is replaced, with a warning
        naming both origins (as timm's ``register_model`` does): a plugin that shadows a built-in, or two
        plugins that chose the same name, should not go unnoticed."""
        def decorator(obj):
            obj.name = name
            if not summary and obj.__doc__:
                doc_summary = obj.__doc__.strip().splitlines()[0]
            else:
                doc_summary = summary
            previous = self._entries.get(name)
            if previous is not None:
                warnings.warn(f"{self.kind} '{name}' registered twice: {self._describe(obj)} ({self._origin}) "
                              f"replaces {self._describe(previous.obj)} ({previous.origin})", stacklevel=2)
            self._entries[name] = Entry(name, obj, doc_summary, self._origin)
            return obj

        return decorator

    @staticmethod
    def _describe(obj) -> str:
        return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', type(obj).__name__)}"

    def names(self) -> list[str]:
        return sorted(self._entries)

    def entries(self) -> list[Entry]:
        return [self._entries[n] for n in self.names()]

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def get(self, name: str) -> Entry:
        if name not in self._entries:
            raise NotFoundError(f"unknown {self.kind} '{name}'{did_you_mean(name, self.names(), cutoff=0.4)} "
                                f"(`ltbench {self.kind}s` lists them all)")
        return self._entries[name]

    def create(self, name: str, *args, **kwargs):
        return self.get(name).obj(*args, **kwargs)

    def origin(self, origin: str):
        """Context manager: entries registered inside it are marked with ``origin``."""
        registry = self

        class _Origin:
            def __enter__(self_inner):
                self_inner.previous = registry._origin
                registry._origin = origin

            def __exit__(self_inner, *exc):
                registry._origin = self_inner.previous

        return _Origin()


METHODS = Registry("method")
DATASETS = Registry("dataset")

register_method = METHODS.register
register_dataset = DATASETS.register

PLUGIN_ENV = "LTBENCH_PLUGINS"  # os.pathsep-separated folders (or .py files) with extra methods
_loaded_plugin_paths: set[str] = set()
_plugin_folders: set[Path] = set()  # resolved folders of the plugin files loaded (their helpers are method code)
_builtins_loaded = False


def _module_name(path: Path) -> str | None:
    """The name a plugin file is imported under: its own (``cos_head``), so that its folder's other files import
    it as Python would for a script's folder (``import cos_head``) and get this very module, unless that name
    already stands for another module (a built-in, an installed one, another plugin folder's file): then a
    name of its own, as before. None: a sibling already imported this file under its name."""
    name, resolved = path.stem, path.resolve()
    existing = sys.modules.get(name)
    if existing is not None:
        if getattr(existing, "__file__", None) and Path(existing.__file__).resolve() == resolved:
            return None
        if getattr(existing, "__file__", None) and Path(existing.__file__).resolve().parent in _plugin_folders:
            warnings.warn(f"plugin {path}: a module '{name}' was loaded before from {existing.__file__}, so "
                          f"`import {name}` in {path.parent} gets that file; rename one of them", stacklevel=3)
    elif name.isidentifier() and not keyword.iskeyword(name) and name not in sys.builtin_module_names:
        spec = importlib.machinery.PathFinder.find_spec(name)  # what `import name` finds: this file, or another
        if spec is not None and spec.origin and Path(spec.origin).resolve() == resolved:
            return name
    return f"ltbench_plugin_{path.stem}_{abs(hash(str(resolved))) % 10**8}"


def _import_file(path: Path) -> None:
    """Import a plugin file, its folder importable (put on sys.path, last, so that it never shadows an installed
    module), without writing __pycache__/ next to it: the folder is the user's (maybe shared, read-only or
    under version control), and a plugin is compiled in milliseconds."""
    folder = str(path.resolve().parent)
    if folder not in sys.path:
        sys.path.append(folder)
    importlib.invalidate_caches()  # files written since the folder was last looked at are found
    module_name = _module_name(path)
    if module_name is None:
        return
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    dont_write = sys.dont_write_bytecode
    sys.dont_write_bytecode = True  # read by SourceFileLoader when it would cache the compiled file (siblings too)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # a broken plugin must not take the other methods down
        sys.modules.pop(module_name, None)
        METHODS.load_errors.append(f"plugin {path} failed to import: {type(exc).__name__}: {exc}")
    finally:
        sys.dont_write_bytecode = dont_write


def plugin_folders() -> frozenset[Path]:
    """The resolved folders of every plugin file loaded in this process."""
    return frozenset(_plugin_folders)


def load_methods(plugin_dirs: list[str | Path] | None = None) -> Registry:
    """Import the built-in methods, the ``ltbench.methods`` entry points and plugin folders/files."""
    global _builtins_loaded
    if not _builtins_loaded:
        _builtins_loaded = True
        import ltbench.methods as builtin

        for info in pkgutil.iter_modules(builtin.__path__):
            if not info.name.startswith("_"):
                importlib.import_module(f"ltbench.methods.{info.name}")
        from importlib.metadata import entry_points

        for ep in entry_points(group="ltbench.methods"):
            with METHODS.origin(f"entry point {ep.value}"):
                try:
                    ep.load()
                except Exception as exc:
                    METHODS.load_errors.append(
                        f"entry point {ep.name} ({ep.value}) failed to import: {type(exc).__name__}: {exc}"
                    )
    paths = [Path(p) for p in (plugin_dirs or [])]
    paths += [Path(p) for p in os.environ.get(PLUGIN_ENV, "").split(os.pathsep) if p]
    for path in paths:
        files = sorted(path.glob("*.py")) if path.is_dir() else [path]
        if not path.exists():
            METHODS.load_errors.append(f"plugin path {path} does not exist")
            continue
        for file in files:
            key = str(file.resolve())
            if file.name.startswith("_") or key in _loaded_plugin_paths:
                continue
            _loaded_plugin_paths.add(key)
            _plugin_folders.add(file.resolve().parent)
            with METHODS.origin(str(file)):
                _import_file(file)
    return METHODS


def create_method(name: str, options: dict | None = None, plugins=None, dataset: str | None = None,
                  imbalance: float | None = None) -> "Method":
    """The method ``name`` with ``options`` (checked by the method), after loading the built-in methods, entry
    points and ``plugins`` (folders or .py files). With ``dataset`` (and its ``imbalance``), the options not in
    ``options`` take the method's ``dataset_defaults`` for it where it has any (else its ``defaults``)."""
    cls = load_methods(plugins).get(name).obj
    given = dict(options or {})
    per_dataset = cls.dataset_defaults(dataset, imbalance, given) if dataset is not None else {}
    return cls(**{**per_dataset, **given})
