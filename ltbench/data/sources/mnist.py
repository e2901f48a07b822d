"""MNIST and Fashion-MNIST: IDX files in torchvision's layout (or a bare folder of them), plain or .gz."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ...errors import DataError
from ...registry import register_dataset
from ..base import ArraySplit, Augment, Sources
from .common import _TorchvisionSource, _one_line, _open_binary


# the most an IDX file may hold: 1 GiB, 20 times MNIST's train images (47 MB; EMNIST ByClass, the largest IDX set
# in use, holds 0.55 GB). A .gz is read up to what its header announces, so a gzip bomb (gigabytes of zeros in a
# few megabytes) is refused after reading one byte more, never decompressed whole into memory.
MAX_IDX_BYTES = 2**30


def read_idx(path: Path) -> np.ndarray:
    """A uint8 IDX file (plain or .gz) as an array; DataError naming the file if it is malformed, announces more
    than MAX_IDX_BYTES, or holds more than its header announces (read no further than one byte past that)."""
    try:
        with _open_binary(path) as f:
            magic = f.read(4)
            ndim = magic[3] if len(magic) == 4 else 0
            if magic[:3] != b"\x00\x00\x08" or not 1 <= ndim <= 3:
                raise DataError(f"{path}: not a uint8 IDX file (magic {magic.hex() or 'missing'}, expected "
                                f"00000801 or 00000803); delete it and fetch it again")
            dims = f.read(4 * ndim)
            shape = tuple(np.frombuffer(dims, ">u4").tolist()) if len(dims) == 4 * ndim else None
            pixels = math.prod(shape) if shape is not None else 0
            if 4 + 4 * ndim + pixels > MAX_IDX_BYTES:
                raise DataError(f"{path}: its header announces shape {shape} ({pixels:,} bytes), more than ltbench "
                                f"reads from one IDX file ({MAX_IDX_BYTES:,} bytes; MNIST's largest holds 47,040,000); "
                                f"delete it and fetch it again")
            data = f.read(pixels + 1) if shape is not None else b""
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: cannot read IDX file ({_one_line(exc)}); delete it and fetch it again") from exc
    if len(data) > pixels:  # a gzip bomb, or a damaged file: either way not what the header describes
        raise DataError(f"{path}: holds more than its header announces (shape {shape}: {pixels:,} bytes of pixels); "
                        f"delete it and fetch it again")
    if shape is None or len(data) < pixels:
        raise DataError(f"{path}: truncated or malformed IDX file ({4 + len(dims) + len(data):,} bytes, header says "
                        f"shape {shape}); delete it and fetch it again")
    return np.frombuffer(data, np.uint8).reshape(shape)


class _Mnist(_TorchvisionSource):
    """MNIST-style IDX files in torchvision's ``<root>/<Name>/raw/`` layout, plain or .gz."""

    num_classes, channels, image_size = 10, 1, 28
    default_imbalance = 100.0
    default_recipe = "cpu"
    val_per_class = 20
    class_names: list = [str(c) for c in range(10)]
    files = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}

    def candidates(self, root: Path) -> list[Path]:
        return [folder for base in super().candidates(root) for folder in (base / self.torchvision_name / "raw", base)]

    @staticmethod
    def _file(folder: Path, name: str) -> Path | None:
        """The plain file if present (torchvision extracts next to the .gz), else the .gz."""
        return next((p for p in (folder / name, folder / f"{name}.gz") if p.is_file()), None)

    def find(self, root: Path) -> Path | None:
        for folder in self.candidates(Path(root)):
            if all(self._file(folder, name) for pair in self.files.values() for name in pair):
                return folder
        return None

    def manual_download(self, root: Path) -> str:
        names = ", ".join(f"{n}.gz" for pair in self.files.values() for n in pair)
        return f"download {names} from {self.download_url} into {root / self.torchvision_name / 'raw'}"

    def how_to_get(self) -> str:
        names = ", ".join(n for pair in self.files.values() for n in pair)
        return (f"expected {self.torchvision_name}/raw/ (torchvision layout), {self.data_dir}/{self.torchvision_name}"
                f"/raw/ or a folder holding {names} (plain or .gz); pass --data-root DIR, or --download to fetch "
                f"it with torchvision")

    def load(self, root: Path, download: bool = False) -> Sources:
        root = Path(root)
        folder = self.locate(root, download)
        splits = {}
        for split, (image_name, label_name) in self.files.items():
            images = read_idx(self._file(folder, image_name))
            labels = read_idx(self._file(folder, label_name)).astype(np.int64)
            matched = images.ndim == 3 and labels.ndim == 1 and len(images) == len(labels)
            if not matched or labels.max() >= self.num_classes:
                raise DataError(f"{folder}: {image_name} ({images.shape}) and {label_name} ({labels.shape}, "
                                f"max {labels.max()}) do not match; delete them and fetch them again")
            splits[split] = ArraySplit(images[..., None], labels)
        return Sources(splits["train"], splits["test"], class_names=list(self.class_names),
                       info={"layout": "idx", "path": str(folder), "cache": None})


@register_dataset("mnist-lt", summary="MNIST long-tailed (LDAM rule), 28x28 grey")
class Mnist(_Mnist):
    torchvision_name = "MNIST"
    download_url = "https://ossci-datasets.s3.amazonaws.com/mnist/"
    data_dir = "mnist"
    mean, std = (0.1307,), (0.3081,)
    augment = Augment(pad=2, flip=False)  # mirrored digits are not digits


@register_dataset("fashion-mnist-lt", summary="Fashion-MNIST long-tailed (LDAM rule), 28x28 grey")
class FashionMnist(_Mnist):
    torchvision_name = "FashionMNIST"
    download_url = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
    data_dir = "fashion-mnist"
    mean, std = (0.2860,), (0.3530,)
    augment = Augment(pad=2, flip=True)
    class_names = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot"]

