"""Data: sources (registered datasets), long-tailed subsets, samplers and the two loader paths (imported
when a run needs them, so listing the datasets does not import torch)."""
from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..files import expand_user
from ..registry import DATASETS
from .base import ArraySplit, Augment, DatasetSource, FileSplit, Sources  # noqa: F401
from .longtail import balanced_val_split, group_sizes, lt_subset, shot_groups
from . import sources as _sources  # noqa: F401  (registers the datasets)

DATA_ROOT_ENV = "LTBENCH_DATA"


def default_data_root() -> Path:
    import os

    return expand_user(os.environ[DATA_ROOT_ENV], f"${DATA_ROOT_ENV}") if os.environ.get(DATA_ROOT_ENV) \
        else Path.home() / "data"


def get_source(name: str) -> DatasetSource:
    return DATASETS.create(name)


@dataclass(frozen=True)
class DataSpec:
    """What names a run's training data, besides its content: the data set, the long-tail rule that drew the
    train subset and its validation split (all None for a published long-tailed list), and the train size.
    With the data's content fingerprint it is the data part of every stage key (``key``)."""

    dataset: str
    train_size: int
    imbalance: float | None = None  # max / min class count of the LT rule, as given (100 and 100.0 are two keys)
    profile: str | None = None
    subset_seed: int | None = None
    val_per_class: int | None = None

    def key(self, fingerprint: str) -> dict:
        """The dict stage keys hash: these fields and the fingerprint."""
        return {**dataclasses.asdict(self), "fingerprint": fingerprint}


@dataclass
class DataBundle:
    """The long-tailed train subset, the balanced validation split and the test set of one run."""

    source: DatasetSource
    train: ArraySplit | FileSplit
    val: ArraySplit | FileSplit
    test: ArraySplit | FileSplit
    class_counts: np.ndarray
    spec: DataSpec
    train_indices: np.ndarray | None = None  # into the balanced pool (None: published LT list)
    val_indices: np.ndarray | None = None
    info: dict = field(default_factory=dict)  # facts for config.json and messages (layout, path, cache, ...)

    @property
    def num_classes(self) -> int:
        return self.source.num_classes

    @functools.cached_property
    def fingerprint(self) -> str:
        """Content fingerprint of the train and validation data (part of every stage key)."""
        return f"{self.train.fingerprint()}-{self.val.fingerprint() if self.val is not None else 'no-val'}"

    def loader(self, split: str, device, workers: int = 4):
        from .loaders import FileLoader, TensorLoader  # torch: imported by runs, not by `ltbench datasets`

        data = {"train": self.train, "val": self.val, "test": self.test}[split]
        src = self.source
        if isinstance(data, ArraySplit):
            return TensorLoader(data, src.num_classes, src.mean, src.std, src.augment, device)
        return FileLoader(data, src.num_classes, src.mean, src.std, src.image_size, device, workers, src.augment)


def build_data(dataset: str, data_root: str | Path | None, imbalance: float | None, profile: str = "exp",
               subset_seed: int = 0, val_per_class: int | None = None, download: bool = False) -> DataBundle:
    """Load a source and apply the LDAM-DRW long-tail rule (docs/protocol.md) with its validation split."""
    source = get_source(dataset)
    root = expand_user(data_root, "--data-root") if data_root else default_data_root()
    sources = source.load(root, download=download)
    info = dict(sources.info)
    if source.long_tailed_pool:
        train, test, val = sources.train, sources.test, sources.val  # val None: no split apart from test
        if isinstance(test, FileSplit):  # train and val are checked by their fingerprint (the stage keys)
            test.check_files()
        train_idx = val_idx = None
        info["imbalance"] = None
        spec = DataSpec(dataset, int(len(train)))
    else:
        imbalance = source.default_imbalance if imbalance is None else imbalance
        pool = sources.train
        per_class = source.val_per_class if val_per_class is None else val_per_class
        fewest = int(np.bincount(pool.labels, minlength=source.num_classes).min())
        if not 0 <= per_class < fewest:
            raise ConfigError(f"--val-per-class {per_class}: must lie in 0..{fewest - 1} for {dataset}")
        # the validation split first, so that it never holds a training image; img_max stays the
        # balanced set's count, so only classes that would keep every image (the head) lose per_class
        val_idx = balanced_val_split(pool.labels, source.num_classes, per_class, subset_seed)
        train_idx = lt_subset(pool.labels, source.num_classes, imbalance, profile, subset_seed, img_max=fewest,
                              exclude=val_idx)
        train, test = pool.subset(train_idx), sources.test
        val = pool.subset(val_idx) if per_class else None
        info.update(imbalance=imbalance, profile=profile, subset_seed=subset_seed, val_per_class=per_class,
                    val="held out of the balanced train pool before the long-tailed subset")
        spec = DataSpec(dataset, int(len(train)), imbalance, profile, subset_seed, per_class)
    counts = np.bincount(train.labels, minlength=source.num_classes)
    info.update(train_size=int(len(train)), val_size=int(len(val)) if val is not None else 0, test_size=int(len(test)),
                group_sizes=group_sizes(counts), class_names=list(sources.class_names))
    return DataBundle(source, train, val, test, counts, spec, train_idx, val_idx, info)
