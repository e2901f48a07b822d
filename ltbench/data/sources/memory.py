"""In-memory sources (no files): the 8x8 digits bundled with scikit-learn and a generated set for tests."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ...registry import register_dataset
from ..base import ArraySplit, Augment, DatasetSource, Sources


@register_dataset("digits-lt", summary="scikit-learn's bundled 8x8 digits, 1,797 images (no download)")
class Digits(DatasetSource):
    """Real handwritten digits that ship inside scikit-learn: a CPU-sized long-tail benchmark anywhere."""

    num_classes, channels, image_size = 10, 1, 8
    mean, std = (0.3045,), (0.3760,)  # computed once from all 1,797 images scaled to [0, 1]
    augment = Augment(pad=1, flip=False)  # a mirrored 2, 3, 7 is not that digit
    # The train pool has ~150 images per class: at IF 100 the tail class would keep int(150/100) = 1
    # image; IF 20 keeps 7, still a clear tail.
    default_imbalance = 20.0
    default_recipe = "tiny"  # ~500 train images: batch 128 gives 4 steps an epoch, too few to converge
    val_per_class = 10
    test_per_class = 30  # balanced test part held out with a fixed seed, independent of the run seed

    def find(self, root: Path) -> Path | None:
        import importlib.util  # where scikit-learn's data files are, without importing it (seconds)

        spec = importlib.util.find_spec("sklearn")
        if spec is None or not spec.submodule_search_locations:
            return None
        folder = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"
        return folder if (folder / "digits.csv.gz").is_file() else None

    def how_to_get(self) -> str:
        return "bundled with scikit-learn (pip install scikit-learn); no files or download needed"

    def load(self, root: Path, download: bool = False) -> Sources:
        from sklearn.datasets import load_digits

        digits = load_digits()
        images = (digits.images.astype(np.int64) * 255 // 16).astype(np.uint8)[..., None]  # 0..16 -> 0..255
        labels = digits.target.astype(np.int64)
        rng = np.random.RandomState(0)
        test = np.concatenate([rng.choice(np.flatnonzero(labels == c), self.test_per_class, replace=False)
                               for c in range(self.num_classes)])
        is_test = np.zeros(len(labels), dtype=bool)
        is_test[test] = True
        return Sources(ArraySplit(images[~is_test], labels[~is_test]), ArraySplit(images[is_test], labels[is_test]),
                       class_names=[str(c) for c in range(self.num_classes)],
                       info={"layout": "sklearn", "path": str(self.find(root)), "cache": None})


@register_dataset("synthetic", summary="10 generated classes of 16x16 coloured stripes, for tests (no files)")
class Synthetic(DatasetSource):
    """A tiny, fixed, learnable data set generated in memory, so tests never depend on files."""

    num_classes, channels, image_size = 10, 3, 16
    mean, std = (0.4223, 0.4224, 0.4220), (0.2398, 0.2390, 0.2389)  # computed once from the train pool
    augment = Augment(pad=2, flip=True)
    default_imbalance = 10.0
    default_recipe = "smoke"
    val_per_class = 10
    train_per_class, test_per_class = 200, 50

    def find(self, root: Path) -> Path | None:
        return Path(__file__).parent.parent  # generated in memory: always available (ltbench/data/)

    def how_to_get(self) -> str:
        return "generated in memory; no files needed"

    def _generate(self, rng: np.random.RandomState, per_class: int) -> ArraySplit:
        """Class c: hue c/10 of the colour wheel, stripes of period 2 + c % 3 (rows for even c) + noise."""
        c = np.arange(self.num_classes)
        colour = 128 + 90 * np.cos(2 * np.pi * c[:, None] / 10 + np.array([0, 2, 4]) * np.pi / 3)
        grid = np.arange(self.image_size)
        bands = (grid[None, :] // (2 + c[:, None] % 3)) % 2  # [C, S]
        stripes = np.where((c % 2 == 0)[:, None, None], bands[:, :, None], bands[:, None, :])  # [C, S, S]
        labels = np.repeat(c, per_class)
        pattern = colour[labels, None, None, :] * (0.7 + 0.3 * stripes[labels, :, :, None])
        noise = rng.normal(0, 20, pattern.shape)
        return ArraySplit(np.clip(pattern + noise, 0, 255).astype(np.uint8), labels.astype(np.int64))

    def load(self, root: Path, download: bool = False) -> Sources:
        rng = np.random.RandomState(0)
        train = self._generate(rng, self.train_per_class)
        test = self._generate(rng, self.test_per_class)
        return Sources(train, test, class_names=[f"class{c}" for c in range(self.num_classes)],
                       info={"layout": "generated", "path": str(self.find(root)), "cache": None})

