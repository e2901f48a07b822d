"""What a dataset source provides: a balanced (or published long-tailed) train pool and a test set.

Small-image sources return decoded uint8 arrays (``ArraySplit``); large ones return file lists
(``FileSplit``) that a DataLoader decodes. ``ltbench.data.build_data`` turns a source into the
long-tailed train subset, the validation split and the test set.
"""
from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

OUTSIDE_ROOT_ENV = "LTBENCH_ALLOW_OUTSIDE_ROOT"  # "1": follow list paths that leave the image root


@dataclass
class ArraySplit:
    images: np.ndarray  # uint8 [N, H, W, C]
    labels: np.ndarray  # int64 [N]

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: np.ndarray) -> "ArraySplit":
        return ArraySplit(self.images[indices], self.labels[indices])

    def fingerprint(self) -> str:
        """Content hash of the decoded pixels and labels (CIFAR-10-LT: ~25 ms)."""
        sha = hashlib.sha1(np.ascontiguousarray(self.images).data)
        sha.update(np.ascontiguousarray(self.labels, dtype=np.int64).data)
        return sha.hexdigest()[:16]


@dataclass
class FileSplit:
    root: Path  # image root; paths are relative to it
    paths: list  # relative paths (str)
    labels: np.ndarray  # int64 [N]
    list_file: Path | None = None
    lines: np.ndarray | None = None  # int64 [N]: the list line of each path (error messages)
    # False: every image must resolve (symbolic links followed) to a file under ``root``; True: the user allowed
    # paths elsewhere ($LTBENCH_ALLOW_OUTSIDE_ROOT=1), absolute ones included
    outside_root: bool = False

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: np.ndarray) -> "FileSplit":
        lines = self.lines[indices] if self.lines is not None else None
        return FileSplit(self.root, [self.paths[i] for i in indices], self.labels[indices], self.list_file, lines,
                         self.outside_root)

    def where(self, index: int) -> str:
        """'list.txt:12' (or the list alone, or nothing): where path ``index`` was listed."""
        if self.list_file is None:
            return ""
        return f"{self.list_file}:{int(self.lines[index])}" if self.lines is not None else str(self.list_file)

    def _listed(self, index: int) -> str:
        return f" (listed at {self.where(index)})" if self.list_file else ""

    def _stats(self):
        """os.stat of every listed image: one stat per file (no decoding); DataError naming the image and its
        list line for one that is missing or not a file, before anything trains. Unless ``outside_root``, also
        for one whose real path (symbolic links resolved: the file's own, or a linked folder on its way) lies
        outside the image root: the list's text stays under the root, a link inside the root must not lead out.
        A file that is no link costs nothing more (lstat is its stat); each folder is resolved once."""
        from ..errors import DataError

        prefix = f"{self.root}{os.sep}"
        root = os.path.realpath(self.root)
        inside = root.rstrip(os.sep) + os.sep
        folders: dict[str, str] = {}  # listed folder -> its real path
        for index, path in enumerate(self.paths):
            full = path if os.path.isabs(path) else prefix + path  # absolute: only with outside_root
            try:
                info = os.lstat(full)
                real = None
                if stat.S_ISLNK(info.st_mode):
                    real = os.path.realpath(full)
                    info = os.stat(full)
            except OSError:
                info = None
            if info is None or not stat.S_ISREG(info.st_mode):
                what = "does not exist" if info is None else "is not a file"
                raise DataError(f"image {full}{self._listed(index)} {what}; fix the list or the data root")
            if not self.outside_root:
                if real is None:
                    folder, name = os.path.split(full)
                    if folder not in folders:
                        folders[folder] = os.path.realpath(folder)
                    real = os.path.join(folders[folder], name)
                if not real.startswith(inside):
                    raise DataError(f"image {full}{self._listed(index)} is a symbolic link (or in a linked folder) "
                                    f"that leads to {real}, outside the image root {root}; fix the link or the list, "
                                    f"or set {OUTSIDE_ROOT_ENV}=1 to follow such paths")
            yield info

    def check_files(self) -> None:
        """Every listed image exists and is a file (the splits a run does not fingerprint: the test set)."""
        for _ in self._stats():
            pass

    def fingerprint(self) -> str:
        """Hash of every listed path, label, file size and modification time (``_stats``: which also checks
        that every listed image exists and is a file before training)."""
        sizes, mtimes = np.empty(len(self), np.int64), np.empty(len(self), np.int64)
        for index, info in enumerate(self._stats()):
            sizes[index], mtimes[index] = info.st_size, info.st_mtime_ns
        sha = hashlib.sha1("\n".join(self.paths).encode())
        for array in (np.asarray(self.labels, np.int64), sizes, mtimes):
            sha.update(array.data)
        return sha.hexdigest()[:16]


@dataclass(frozen=True)
class Augment:
    """Training augmentation of small images, applied to whole batches on the device."""

    pad: int = 4  # random crop with this zero padding (0: no crop)
    flip: bool = True  # random horizontal flip
    color_jitter: float = 0.0  # file-list data: ColorJitter(brightness=contrast=saturation=this, hue=0)


@dataclass
class Sources:
    """What a DatasetSource.load returns."""

    train: ArraySplit | FileSplit  # balanced pool (LT rule applied later) or published LT list
    test: ArraySplit | FileSplit
    val: ArraySplit | FileSplit | None = None  # published val list (ImageNet-LT, Places-LT, iNat)
    class_names: list = field(default_factory=list)
    info: dict = field(default_factory=dict)  # e.g. {"layout": "torchvision", "path": "..."}


class DatasetSource:
    """Base class of the registered datasets (``@register_dataset``)."""

    name: str = ""
    num_classes: int = 0
    channels: int = 3
    image_size: int = 32
    mean: tuple = (0.5,)
    std: tuple = (0.5,)
    augment: Augment = Augment()
    long_tailed_pool: bool = False  # True: train list is already long-tailed (no --imbalance)
    default_imbalance: float = 100.0
    default_recipe: str = "paper"
    default_backbone: str = "resnet32"
    val_per_class: int = 20
    data_dir: str = ""  # default sub-folder under the data root

    def candidates(self, root: Path) -> list[Path]:
        """Folders where this dataset may live under ``root`` (searched in order)."""
        return [root / self.data_dir, root] if self.data_dir else [root]

    def find(self, root: Path) -> Path | None:
        """The folder holding the data in an accepted layout, or None."""
        raise NotImplementedError

    def how_to_get(self) -> str:
        """One line: accepted layouts and how to obtain them."""
        return ""

    def load(self, root: Path, download: bool = False) -> Sources:
        """Load (decode once, cached) from the data root; raise DataError with the fix if missing."""
        raise NotImplementedError
