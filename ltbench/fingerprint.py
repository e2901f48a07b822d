"""Fingerprints that make a stage key name what the stage computes: the code that trains it and the data
it trains on (docs/protocol.md, "Stage keys"). A reused artifact is then exactly what a fresh run of the
same code on the same data would train."""
from __future__ import annotations

import functools
import hashlib
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
    (the core's own ``Method`` excepted): editing a method file, or a plugin it subclasses, is a new key."""
    from .method import Method

    parts = []
    for cls in type(method).__mro__:
        if not (isinstance(cls, type) and issubclass(cls, Method)) or cls is Method:
            continue
        module = sys.modules.get(cls.__module__)
        try:
            source = inspect.getsource(module) if module is not None else inspect.getsource(cls)
        except (OSError, TypeError):  # defined where no source can be read (e.g. an interactive session)
            source = "(no source)"
        parts += [cls.__qualname__, source]  # not the module name: plugin modules get per-process names
    return _digest(parts)
