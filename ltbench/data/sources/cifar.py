"""CIFAR-10/100: torchvision's python pickles (read without running code) or ``{train,test}/<class>/`` image
folders."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from ...errors import DataError
from ...registry import register_dataset
from ..base import ArraySplit, Augment, Sources
from .common import _TorchvisionSource, _one_line
from .image_folders import _decode_images, _list_images, _read_cache, _write_cache, cache_candidates, listing_key


def _numpy_global(module: str, name: str):
    """numpy's own array constructors, from ``numpy._core`` (NumPy 2) or ``numpy.core`` (NumPy 1)."""
    import importlib

    for package in ("numpy._core", "numpy.core"):
        try:
            return getattr(importlib.import_module(f"{package}.{module}"), name)
        except (ImportError, AttributeError):
            continue
    raise pickle.UnpicklingError(f"numpy has no {module}.{name}")


# The only globals a CIFAR python batch needs. The official files (cPickle, protocol 2) hold a dict of
# byte strings, ints and lists, and one uint8 array under b'data', written as
# numpy.core.multiarray._reconstruct(numpy.ndarray, ...) + numpy.dtype('u1'); a copy re-saved by
# Python 3 names numpy._core instead, and protocol 5 uses numeric._frombuffer.
_CIFAR_GLOBALS = {
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
    **{(f"{package}.multiarray", "_reconstruct"): lambda: _numpy_global("multiarray", "_reconstruct")
       for package in ("numpy.core", "numpy._core")},
    **{(f"{package}.numeric", "_frombuffer"): lambda: _numpy_global("numeric", "_frombuffer")
       for package in ("numpy.core", "numpy._core")},
}


class _Refused(pickle.UnpicklingError):
    """A global that a CIFAR batch never holds: refused before it is imported, let alone called."""


class _CifarUnpickler(pickle.Unpickler):
    """pickle, but the only callables it can reach are numpy's array constructors (_CIFAR_GLOBALS)."""

    def find_class(self, module: str, name: str):
        make = _CIFAR_GLOBALS.get((module, name))
        if make is None:
            raise _Refused(f"{module}.{name}")
        return make()


def _plain(value, depth: int = 0) -> bool:
    """Only what CIFAR batches hold: dicts, lists, byte strings, ints (and floats) and numeric arrays."""
    if depth > 4:
        return False
    if isinstance(value, (bytes, str, int, float, type(None))):
        return True
    if isinstance(value, np.ndarray):
        return not value.dtype.hasobject
    if isinstance(value, (list, tuple)):
        return all(_plain(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return all(_plain(k, depth + 1) and _plain(v, depth + 1) for k, v in value.items())
    return False


def _read_pickle(path: Path) -> dict:
    """A CIFAR python batch (or meta) file, read with an unpickler that cannot run code: a crafted file
    that names any other global (os.system, builtins.eval, ...) is refused before anything is called."""
    fix = "delete it and fetch it again (--download)"
    try:
        with open(path, "rb") as f:
            content = _CifarUnpickler(f, encoding="bytes").load()
    except _Refused as exc:
        raise DataError(f"{path}: refused to unpickle: it calls {exc}, which a CIFAR batch never holds (a crafted "
                        f"or foreign file); {fix}") from None
    except Exception as exc:  # noqa: BLE001  truncated or foreign files fail in any number of ways
        raise DataError(f"{path}: not a readable CIFAR python pickle ({_one_line(exc)}); {fix}") from None
    if not isinstance(content, dict) or not _plain(content):
        raise DataError(f"{path}: not a CIFAR python pickle (expected a dict of byte strings, lists and arrays, "
                        f"got {type(content).__name__}); {fix}")
    return content



class _Cifar(_TorchvisionSource):
    """CIFAR in torchvision's pickle layout or as ``{train,test}/<class>/*.jpg|png`` image folders."""

    channels, image_size = 3, 32
    augment = Augment(4, True)
    default_imbalance = 100.0
    default_recipe = "paper"
    pickle_dir = ""
    pickle_files: dict = {}
    label_key = b""
    meta_file, names_key = "", b""

    def _has_pickles(self, folder: Path) -> bool:
        return all((folder / name).is_file() for names in self.pickle_files.values() for name in names)

    def _has_image_folders(self, folder: Path) -> bool:
        """train/ and test/ with exactly num_classes class folders (so CIFAR-10 never matches CIFAR-100)."""
        if not ((folder / "train").is_dir() and (folder / "test").is_dir()):
            return False
        return sum(d.is_dir() for d in (folder / "train").iterdir()) == self.num_classes

    def find(self, root: Path) -> Path | None:
        for base in self.candidates(Path(root)):
            for folder in (base / self.pickle_dir, base):
                if self._has_pickles(folder):
                    return folder
            if self._has_image_folders(base):
                return base
        return None

    def manual_download(self, root: Path) -> str:
        return f"download {self.download_url} and unpack it in {root} (giving {root / self.pickle_dir}/)"

    def how_to_get(self) -> str:
        return (f"expected {self.pickle_dir}/ (torchvision layout) or {self.data_dir}/{{train,test}}/<class>/ "
                f"(image folders); pass --data-root DIR, or --download to fetch it with torchvision")

    def load(self, root: Path, download: bool = False) -> Sources:
        root = Path(root)
        folder = self.locate(root, download)
        if self._has_pickles(folder):
            train, test = (self._read_pickles(folder, split) for split in ("train", "test"))
            meta = folder / self.meta_file
            names = self._class_names(meta) if meta.is_file() else [str(c) for c in range(self.num_classes)]
            return Sources(train, test, class_names=names,
                           info={"layout": "torchvision", "path": str(folder), "cache": None})
        return self._load_image_folders(folder)

    def _class_names(self, meta: Path) -> list[str]:
        names = _read_pickle(meta).get(self.names_key)
        if not (isinstance(names, list) and len(names) == self.num_classes and all(isinstance(n, bytes) for n in names)):
            raise DataError(f"{meta}: {self.names_key!r} is not a list of {self.num_classes} class names; delete it "
                            f"and fetch it again")
        return [n.decode("utf-8", errors="replace") for n in names]

    def _read_pickles(self, folder: Path, split: str) -> ArraySplit:
        batches = [(folder / name, _read_pickle(folder / name)) for name in self.pickle_files[split]]
        try:
            data = np.concatenate([np.asarray(b[b"data"], np.uint8).reshape(-1, 3072) for _, b in batches])
            labels = np.concatenate([np.asarray(b[self.label_key], np.int64) for _, b in batches])
        except (KeyError, ValueError, TypeError) as exc:
            files = ", ".join(str(path) for path, _ in batches)
            raise DataError(f"{files}: not CIFAR batches (need b'data' rows of 3072 bytes and "
                            f"{self.label_key!r}; {_one_line(exc)}); delete them and fetch them again") from exc
        if len(data) != len(labels) or labels.min() < 0 or labels.max() >= self.num_classes:
            raise DataError(f"{folder}: {split} has {len(data)} images and {len(labels)} labels in "
                            f"{labels.min()}..{labels.max()}; delete it and fetch it again")
        # each row is the red, green then blue 32x32 plane (row-major): CHW -> HWC
        return ArraySplit(np.ascontiguousarray(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)), labels)

    def _load_image_folders(self, folder: Path) -> Sources:
        listing = {split: _list_images(folder / split) for split in ("train", "test")}
        classes = listing["train"][2]
        if listing["test"][2] != classes:
            raise DataError(f"{folder}: train/ and test/ hold different class folders; "
                            f"{self.how_to_get()}")
        key = listing_key(folder, [path for files, _, _ in listing.values() for path in files])
        places = cache_candidates(self.name, folder)
        notes: list[str] = []  # a damaged cache, rebuilt (shown as a warning line by the run)
        cached = _read_cache(places, key, notes)
        if cached:
            cache, arrays = cached
        else:
            arrays = {"key": np.array(key), "class_names": np.array(classes)}
            for split, (files, labels, _) in listing.items():
                arrays[f"{split}_images"] = _decode_images(files, self.image_size)
                arrays[f"{split}_labels"] = labels
            cache = _write_cache(places, arrays)
        train, test = (ArraySplit(arrays[f"{s}_images"], arrays[f"{s}_labels"]) for s in ("train", "test"))
        return Sources(train, test, class_names=[str(n) for n in arrays["class_names"]],
                       info={"layout": "image folders", "path": str(folder),
                             "cache": str(cache) if cache else None, "cache_hit": bool(cached),
                             **({"warnings": notes} if notes else {})})


@register_dataset("cifar10-lt", summary="CIFAR-10 long-tailed (LDAM rule), 32x32 RGB")
class Cifar10(_Cifar):
    torchvision_name, data_dir, pickle_dir = "CIFAR10", "cifar10", "cifar-10-batches-py"
    download_url = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    num_classes = 10
    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
    val_per_class = 20
    pickle_files = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}
    label_key = b"labels"
    meta_file, names_key = "batches.meta", b"label_names"


@register_dataset("cifar100-lt", summary="CIFAR-100 long-tailed (LDAM rule), 32x32 RGB")
class Cifar100(_Cifar):
    torchvision_name, data_dir, pickle_dir = "CIFAR100", "cifar100", "cifar-100-python"
    download_url = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
    num_classes = 100
    mean, std = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
    val_per_class = 5  # 500 images per class: at IF 100 tail classes have few unkept images to spare
    pickle_files = {"train": ("train",), "test": ("test",)}
    label_key = b"fine_labels"
    meta_file, names_key = "meta", b"fine_label_names"

