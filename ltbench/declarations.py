"""The built-in methods' declarations, read without importing the method files (they import torch: about
5 s of CPU before anything prints).

`ltbench methods` shows, and `ltbench table` labels runs by, what a method declares: family, summary,
reference, options with their defaults, allowed values and help, and its stages under the paper recipe.
methods/declarations.json records them for the built-in methods, with a digest of the method files it was
made from; ``python -m ltbench.declarations`` rewrites it (tests/test_daily_use.py fails while it differs
from the methods' own declarations). A digest that does not match the files (a built-in method edited in
a checkout) makes :func:`builtin` return None, and callers import the methods as before: the record only
ever saves time, it never stands in for code that changed. Plugins and entry points are always imported.
"""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

DECLARATIONS_FILE = "declarations.json"
FORMAT = 1  # the record's layout; another one is read as stale


def methods_folder() -> Path:
    import ltbench.methods  # the package's docstring only: no method file is imported

    return Path(ltbench.methods.__file__).parent


def digest(folder: Path | None = None) -> str:
    """sha256 over the names and bytes of the built-in method files (every .py under the folder)."""
    folder = folder or methods_folder()
    sha = hashlib.sha256()
    for path in sorted(folder.rglob("*.py")):
        sha.update(path.relative_to(folder).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return sha.hexdigest()


def describe(entry) -> dict:
    """A registry entry's declarations as `ltbench methods` shows them (imports nothing itself)."""
    from .errors import LTBenchError
    from .recipes import RECIPES

    cls = entry.obj
    described = {"name": entry.name, "family": getattr(cls, "family", "") or "", "summary": entry.summary,
                 "reference": getattr(cls, "reference", "") or "", "origin": entry.origin,
                 "defaults": dict(getattr(cls, "defaults", {}) or {})}
    try:
        described["stages"] = [{"name": s.name, "trainable": s.trainable, "sampler": s.sampler}
                               for s in cls().stages(RECIPES["paper"])]
    except LTBenchError as exc:
        described["stages"] = f"(cannot list: {exc})"
    options = []
    for key, default in described["defaults"].items():
        choices, allowed = (getattr(cls, "choices", {}) or {}).get(key), cls.option_range(key)
        options.append({"option": key, "default": str(default),
                        "allowed": " | ".join(map(str, choices)) if choices else str(allowed or ""),
                        "meaning": (getattr(cls, "help", {}) or {}).get(key, "")})
    described["options"] = options
    return described


def builtin(folder: Path | None = None) -> dict[str, dict] | None:
    """name -> declarations of every built-in method, or None when the record is missing, unreadable or made
    from other method files than these."""
    folder = folder or methods_folder()
    try:
        record = json.loads((folder / DECLARATIONS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("format") != FORMAT or record.get("digest") != digest(folder):
        return None
    methods = record.get("methods")
    return methods if isinstance(methods, dict) else None


def generate() -> dict:
    """The record, from the built-in methods themselves (imports them, hence torch)."""
    from .registry import load_methods

    registry = load_methods()
    methods = {e.name: describe(e) for e in registry.entries() if e.origin == "built-in"}
    return {"format": FORMAT, "digest": digest(), "generated_by": "python -m ltbench.declarations",
            "methods": methods}


def text(record: dict) -> str:
    return json.dumps(record, indent=1, ensure_ascii=False) + "\n"


def main() -> int:
    """Rewrite methods/declarations.json from the built-in methods."""
    from .files import write_text

    path = methods_folder() / DECLARATIONS_FILE
    write_text(path, text(generate()))
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
