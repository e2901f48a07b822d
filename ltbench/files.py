"""Files on disk: every write is atomic (temp file + fsync + rename), a failed one is one line (WriteError).

Torch-free and below every other layer: the engine's run store (ltbench.engine.store), the run-record
format (ltbench.record) and the table and plot writers (ltbench.results) all write through it."""
from __future__ import annotations

import errno
import json
import math
import os
import tempfile
from pathlib import Path

from .errors import WriteError

# mkstemp creates 0600 files; results folders are often shared by a lab, so files get the usual
# umask-derived mode instead (read once at import, while the process is still single-threaded)
_UMASK = os.umask(0)
os.umask(_UMASK)


def _clean(obj):
    """JSON has no NaN/inf: write them as null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if hasattr(obj, "item") and getattr(obj, "ndim", 1) == 0:
        return _clean(obj.item())
    if hasattr(obj, "tolist"):
        return _clean(obj.tolist())
    return obj


def write_error(path: Path, exc: OSError) -> WriteError:
    """One line for a failed write: which file, why, and what to do (the caller adds what is kept)."""
    if isinstance(exc, WriteError):
        return exc
    reason = exc.strerror or " ".join(str(exc).split()) or type(exc).__name__
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        hint = "free some space on that disk"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        hint = "that folder is not writable: choose another (--results for runs, --out for a table or plot file)"
    else:
        hint = "check that disk and folder"
    return WriteError(f"cannot write {path} ({reason}); {hint}")


def atomic_write(path: Path, write) -> None:
    """Write through ``write(file_object)`` into a temp file beside ``path``, fsync, then rename. A failure
    (disk full, read-only folder) removes the temp file, leaves ``path`` as it was and raises WriteError."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise write_error(path, exc) from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise write_error(path, exc) from None
        raise
    fsync_dir(path.parent)


def make_folder(folder: Path) -> None:
    """``mkdir -p``, or WriteError naming the folder."""
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise write_error(Path(folder), exc) from None


def fsync_dir(folder: Path) -> None:
    """Make a rename durable (the directory entry), where the OS allows it."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_temp_files(folder: Path) -> None:
    """Leftovers of writes killed before their rename (``.name.XXXX.tmp``); never a finished file."""
    for tmp in Path(folder).glob(".*.tmp"):
        tmp.unlink(missing_ok=True)


def write_json(path: Path, obj) -> None:
    atomic_write(path, lambda f: f.write(json.dumps(_clean(obj), indent=2, sort_keys=False).encode()))


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode()))


def write_npz(path: Path, **arrays) -> None:
    import numpy as np

    atomic_write(path, lambda f: np.savez_compressed(f, **arrays))


def append_jsonl(path: Path, obj) -> None:
    try:
        with open(path, "a") as f:
            f.write(json.dumps(_clean(obj)) + "\n")
            f.flush()
    except OSError as exc:  # a line cut short by a full disk is cut back on --resume (checkpoint's log size)
        raise write_error(path, exc) from None


def file_size(path: Path) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def truncate(path: Path, size: int) -> None:
    """Cut an append-only log back to ``size`` bytes (what a checkpoint saw): no duplicate lines after a resume."""
    if Path(path).exists():
        with open(path, "r+b") as f:
            f.truncate(size)
            f.flush()
            os.fsync(f.fileno())


def read_json(path: Path):
    with open(path) as f:
        return json.load(f)


def expand_user(path, what: str) -> Path:
    """``path`` with a leading ``~`` or ``~user`` expanded as a shell expands it (a quoted ``'~/data'`` or a
    value from a file or the environment reaches ltbench unexpanded); ConfigError, naming ``what`` (the option
    or variable that gave it), for a user that does not exist instead of a folder literally named ``~nouser``."""
    from .errors import ConfigError

    text = os.fspath(path)
    if not text.startswith("~"):
        return Path(text)
    expanded = os.path.expanduser(text)
    if expanded.startswith("~"):  # no such user (or no home for '~'): os.path leaves it as it was
        user = text[1:].split("/", 1)[0]
        whose = f"no user '{user}'" if user else "no home folder ($HOME is unset)"
        raise ConfigError(f"{what} {text}: cannot expand '~{user}': there is {whose} on this machine; write the "
                          f"folder out in full")
    return Path(expanded)
