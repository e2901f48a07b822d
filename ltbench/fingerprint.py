"""Fingerprints that make a stage key name what the stage computes: the code that trains it and the data
it trains on (docs/protocol.md, "Stage keys"). A reused artifact is then exactly what a fresh run of the
same code on the same data would train."""
from __future__ import annotations

import ast
import functools
import hashlib
import importlib.machinery
import importlib.util
import inspect
import sys
from pathlib import Path

# The package files whose code defines a stage's computation: the loop and its numerics, the base hooks,
# the stage and recipe math (recipes.py: Optim and its schedule, Stage, Recipe and the presets, lr scaling),
# models, sampling and augmentation, and the stage set-up (engine/trainer.py: seeding, trainable parameters,
# optimizer, restore). Not in it: run settings and their help and ranges (config.py), the CLI, reporting,
# sweeps, tables and the run folder; editing those computes nothing different, so it invalidates no stage.
CORE_FILES = ("method.py", "recipes.py", "engine/loop.py", "engine/trainer.py", "engine/precision.py",
              "models/__init__.py", "models/heads.py", "models/resnet_cifar.py", "models/auxiliary.py",
              "data/base.py", "data/augment.py", "data/samplers.py", "data/loaders.py", "data/longtail.py")


def _digest(parts) -> str:
    sha = hashlib.sha1()
    for part in parts:
        sha.update(part if isinstance(part, bytes) else str(part).encode())
        sha.update(b"\0")
    return sha.hexdigest()[:12]


@functools.lru_cache(maxsize=1)
def core_code() -> str:
    """Hash of the core files above (read once per process)."""
    package = Path(__file__).parent
    return _digest(part for name in CORE_FILES for part in (name, (package / name).read_bytes()))


def method_code(method) -> str:
    """Hash of the source of every module that defines the method's class or one of its Method bases
    (the core's own ``Method`` excepted), and of every method-package module those import, directly or
    through one another (``imported_method_code``): editing a method file, a plugin it subclasses, or a
    helper it imports from another method file or from its plugin folder, is a new key."""
    from .method import Method

    parts, modules = [], []
    for cls in type(method).__mro__:
        if not (isinstance(cls, type) and issubclass(cls, Method)) or cls is Method:
            continue
        module = sys.modules.get(cls.__module__)
        try:
            source = inspect.getsource(module) if module is not None else inspect.getsource(cls)
        except (OSError, TypeError):  # defined where no source can be read (e.g. an interactive session)
            source = "(no source)"
        parts += [cls.__qualname__, source]  # not the module name: plugin modules get per-process names
        if module is not None:
            modules.append(module)
    for name, source in imported_method_code(modules):  # nothing when none is imported: the hash as before
        parts += [name, source]
    return _digest(parts)


def imported_method_code(modules) -> list[tuple[str, bytes]]:
    """(import name, source) of the method-package modules that ``modules`` import, transitively, sorted by
    name: built-in method files (``ltbench.methods.*``), files and packages of a plugin folder (imported as
    ``import cos_head``), and modules of the same top-level package as an entry-point method. Not the core
    (``core_code``), code that computes nothing (the rest of ltbench), nor third-party libraries.

    Read statically (``ast``), so imports inside functions count too, and nothing is imported to find them."""
    hashed = {_file(module) for module in modules} - {None}
    packages = {module.__name__.split(".")[0] for module in modules
                if "." in module.__name__ and module.__name__.split(".")[0] != "ltbench"}
    queue = [(module.__package__ or "", _file(module)) for module in modules]
    found: dict[str, bytes] = {}
    while queue:
        package, file = queue.pop()
        for name in _imported_names(file, package):
            location = _locate(name)
            if location is None or location in hashed or not _in_method_package(name, location, packages):
                continue
            hashed.add(location)
            found[name] = location.read_bytes()
            queue.append((name if location.name == "__init__.py" else name.rpartition(".")[0], location))
    return sorted(found.items())


def _file(module) -> Path | None:
    file = getattr(module, "__file__", None)
    return Path(file).resolve() if file and file.endswith(".py") else None


def _imported_names(file: Path | None, package: str) -> frozenset[str]:
    """Every module name an import statement of ``file`` may name: ``import a.b`` gives a and a.b, ``from a
    import b`` gives a and a.b (b may be a submodule), relative imports resolved against ``package``."""
    try:
        info = file.stat() if file is not None else None
    except OSError:
        info = None
    if info is None:
        return frozenset()
    return _parsed_imports(file, package, info.st_mtime_ns, info.st_size)


@functools.lru_cache(maxsize=1024)
def _parsed_imports(file: Path, package: str, mtime_ns: int, size: int) -> frozenset[str]:
    """``_imported_names``, parsed once per version of the file (a sweep plans thousands of runs)."""
    try:
        tree = ast.parse(file.read_bytes(), str(file))
    except (OSError, SyntaxError, ValueError):
        return frozenset()
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            bases = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                try:
                    base = importlib.util.resolve_name("." * node.level + base, package)
                except (ImportError, ValueError):  # beyond the top-level package: fails at import anyway
                    continue
            bases = [base] + [f"{base}.{alias.name}" for alias in node.names if alias.name != "*"]
        else:
            continue
        for name in bases:  # a.b.c runs a and a.b too
            pieces = name.split(".")
            names.update(".".join(pieces[:end]) for end in range(1, len(pieces) + 1))
    return frozenset(names)


def _locate(name: str) -> Path | None:
    """The source file module ``name`` is (or would be) imported from, without importing anything; None for
    a name that is no module (``from a import function``), a built-in or compiled module, or one not found."""
    if name in sys.modules:
        return _file(sys.modules[name])
    parent, _, last = name.rpartition(".")
    search = None  # sys.path, for a top-level name
    if parent:
        search = getattr(sys.modules.get(parent), "__path__", None)
        if search is None:  # the parent is not an imported package
            return None
    try:
        spec = importlib.machinery.PathFinder.find_spec(last, search)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.has_location or not (spec.origin or "").endswith(".py"):
        return None
    return Path(spec.origin).resolve()


def _in_method_package(name: str, location: Path, packages: set[str]) -> bool:
    """Whether the imported module ``name`` (at ``location``) is method code that no other hash covers."""
    top = name.split(".")[0]
    if name.startswith("ltbench.methods."):
        return True
    if top == "ltbench":
        return False  # the core (core_code) or code that computes nothing (the CLI, reports, settings)
    if top in packages:
        return True  # the entry-point package the method ships in
    from .registry import plugin_folders

    depth = len(name.split(".")) + (location.name == "__init__.py")
    return len(location.parents) >= depth and location.parents[depth - 1] in plugin_folders()
