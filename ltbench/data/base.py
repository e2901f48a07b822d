"""What a dataset source provides: a balanced (or published long-tailed) train pool and a test set.

Small-image sources return decoded uint8 arrays (``ArraySplit``); large ones return file lists
(``FileSplit``) that a DataLoader decodes. ``ltbench.data.build_data`` turns a source into the
long-tailed train subset, the validation split and the test set.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class ArraySplit:
    images: np.ndarray  # uint8 [N, H, W, C]
    labels: np.ndarray  # int64 [N]

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: np.ndarray) -> "ArraySplit":
        return ArraySplit(self.images[indices], self.labels[indices])


@dataclass
class FileSplit:
    root: Path  # image root; paths are relative to it
    paths: list  # relative paths (str)
    labels: np.ndarray  # int64 [N]
    list_file: Path | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: np.ndarray) -> "FileSplit":
        return FileSplit(self.root, [self.paths[i] for i in indices], self.labels[indices], self.list_file)


@dataclass(frozen=True)
class Augment:
    """Training augmentation of small images, applied to whole batches on the device."""

    pad: int = 4  # random crop with this zero padding (0: no crop)
    flip: bool = True  # random horizontal flip


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
    kind: str = "array"  # array (decoded, on-device) | files (DataLoader path)
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
