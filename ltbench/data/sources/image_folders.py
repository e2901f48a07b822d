"""Image folders (``<split>/<class>/*.jpg|png``) decoded once into arrays, and the .npz cache of the decoded
arrays (next to the data when its folder is writable, else under $LTBENCH_CACHE)."""
from __future__ import annotations

import hashlib
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from ...errors import DataError
from .common import _one_line

CACHE_ENV = "LTBENCH_CACHE"  # cache folder used when the data folder is not writable
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}


def _list_images(split_dir: Path) -> tuple[list[Path], np.ndarray, list[str]]:
    """Image files of ``<split>/<class>/``, class folders in alphabetical order = label order."""
    classes = sorted(d.name for d in split_dir.iterdir() if d.is_dir())
    files, labels = [], []
    for label, name in enumerate(classes):
        found = sorted(p for p in (split_dir / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        files += found
        labels += [label] * len(found)
    return files, np.asarray(labels, np.int64), classes


def listing_key(folder: Path, files: list[Path]) -> str:
    """What the decoded arrays of ``files`` are cached under: each file's path (relative to ``folder``), size
    and modification time, one stat per file (as the split-list fingerprint, data/base.py): an image replaced
    under the same name is decoded again, and the data fingerprint that goes into the stage keys (a hash of
    the decoded pixels) changes with it. A replacement of the same size whose mtime was set back is not seen."""
    sha = hashlib.sha1(b"ltbench image folders: path, size, mtime_ns\n")
    for path in files:
        try:
            info = path.stat()
        except OSError as exc:  # removed or made unreadable since the folder was listed
            raise DataError(f"{path}: cannot read ({_one_line(exc)}); delete or replace it") from exc
        sha.update(f"{path.relative_to(folder).as_posix()}\0{info.st_size}\0{info.st_mtime_ns}\n".encode())
    return sha.hexdigest()


def _decode_images(files: list[Path], size: int) -> np.ndarray:
    """Decode image files to uint8 [N, size, size, 3] (once: the result is cached as .npz).

    Pillow (a torchvision dependency) rather than torchvision.io, whose image codecs are deprecated
    since 0.29; 60,000 CIFAR JPEGs take a few seconds either way.
    """
    from ..images import open_image

    out = np.empty((len(files), size, size, 3), np.uint8)
    for i, path in enumerate(files):
        try:
            with open_image(path) as image:  # a decompression bomb: refused before decoding (ImageTooLarge)
                if image.size != (size, size):
                    raise DataError(f"{path}: image is {image.size[0]}x{image.size[1]}, expected {size}x{size} "
                                    f"(the image-folder layout holds the original CIFAR images)")
                out[i] = np.asarray(image.convert("RGB"))
        except OSError as exc:  # includes PIL.UnidentifiedImageError and truncated files
            raise DataError(f"{path}: cannot decode image ({_one_line(exc)}); delete or replace it") from exc
    return out


def _writable(folder: Path) -> bool:
    # root passes os.access on folders that are read-only by mode (such as the shared data copy), so the
    # mode's write bits are checked too: never write into a folder its owner marked read-only.
    return folder.is_dir() and os.access(folder, os.W_OK) and bool(folder.stat().st_mode & 0o222)


def cache_candidates(name: str, folder: Path) -> list[Path]:
    """Where the decoded arrays of an image folder are cached, in order of preference.

    Next to the data when that folder is writable; otherwise under $LTBENCH_CACHE (default
    ~/.cache/ltbench), named after the data set and a hash of the resolved folder path.
    """
    digest = hashlib.sha1(str(folder.resolve()).encode()).hexdigest()[:12]
    user = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "ltbench").expanduser()
    return [folder / f"ltbench-{name}.npz", user / f"{name}-{digest}.npz"]


def _read_cache(paths: list[Path], key: str, notes: list[str] | None = None) -> tuple[Path, dict] | None:
    """The first cache file made from exactly this listing (``listing_key``: a changed file is decoded again). A
    damaged one (cut short by a full disk or a killed copy, say) is rebuilt like a stale one, with a line in
    ``notes``."""
    for path in paths:
        if path.is_file():
            try:
                with np.load(path, allow_pickle=False) as npz:
                    if str(npz["key"]) == key:
                        return path, {k: npz[k] for k in npz.files}
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:  # a truncated .npz: BadZipFile
                if notes is not None:
                    notes.append(f"decode cache {path} is damaged ({_one_line(exc)}); decoding the images again "
                                 f"and rewriting it")
    return None


def _write_cache(paths: list[Path], arrays: dict) -> Path | None:
    """Write atomically (tmp file + os.replace) to the first writable place; None if there is none."""
    for path in paths:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)  # the user cache folder may not exist yet
            if not _writable(path.parent):
                continue
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as f:
                    np.savez(f, **arrays)  # uncompressed: loads in a fraction of a second
                os.chmod(tmp, 0o644)  # mkstemp makes it private; others sharing the data may read it
                os.replace(tmp, path)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
            return path
        except OSError:
            continue
    return None

