"""Published long-tailed split lists (``relative/path label`` per line): ImageNet-LT, Places-LT, iNaturalist 2018.
The images stay on disk; a DataLoader decodes them (``FileSplit``)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ...errors import DataError
from ...registry import register_dataset
from ..base import OUTSIDE_ROOT_ENV, Augment, DatasetSource, FileSplit, Sources
from .common import _not_found, _one_line, _open_binary

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


MAX_LINE_BYTES = 4096 + 64  # PATH_MAX, a label and spaces


def _allow_outside_root() -> bool:
    return os.environ.get(OUTSIDE_ROOT_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def _outside_root(rel: str) -> bool:
    """An absolute path (POSIX, or a Windows drive / UNC path) or one with a '..' component."""
    from pathlib import PurePosixPath, PureWindowsPath

    posix = rel.replace("\\", "/")
    return posix.startswith("/") or bool(PureWindowsPath(rel).drive) or ".." in PurePosixPath(posix).parts


def _split_entries(path: Path):
    """(relative path, label, line number) of each non-blank line; DataError with file:line for anything
    else, and for a path that leaves the image root (absolute, or through '..') unless the user allowed it
    with $LTBENCH_ALLOW_OUTSIDE_ROOT=1: a downloaded list must not make ltbench read files elsewhere."""
    allow_outside = _allow_outside_root()
    try:
        with _open_binary(path) as f:  # lines read with a bound: a .gz bomb without newlines never fills memory
            for number, raw in enumerate(iter(lambda: f.readline(MAX_LINE_BYTES + 1), b""), 1):
                if len(raw) > MAX_LINE_BYTES:
                    raise DataError(f"{path}:{number}: line longer than {MAX_LINE_BYTES:,} bytes (a path is at most "
                                    f"4,096): not a split list, or a damaged one; fetch it again")
                line = raw.decode("utf-8", errors="replace").strip()
                if not line:
                    continue
                try:
                    rel, label = line.split()
                    label = int(label)
                except ValueError:
                    raise DataError(f"{path}:{number}: expected '<relative/path> <integer label>', "
                                    f"got {line!r}") from None
                if not allow_outside and _outside_root(rel):
                    raise DataError(f"{path}:{number}: {rel!r} leaves the data root (an absolute path or '..'); "
                                    f"list paths are relative to the image root: fix the list, or set "
                                    f"{OUTSIDE_ROOT_ENV}=1 to follow such paths")
                yield rel, label, number
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: cannot read split list ({_one_line(exc)})") from exc


def _read_list(path: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    paths, labels, lines = [], [], []
    for rel, label, number in _split_entries(Path(path)):
        paths.append(rel)
        labels.append(label)
        lines.append(number)
    return paths, np.asarray(labels, np.int64), np.asarray(lines, np.int64)


def read_split_list(path: str | Path) -> tuple[list[str], np.ndarray]:
    """Paths and int64 labels of a ``relative/path label`` split list (.txt or .txt.gz)."""
    paths, labels, _ = _read_list(Path(path))
    return paths, labels


class _SplitLists(DatasetSource):
    """Images on disk, named by published split lists that are already long-tailed (no LT rule applied)."""

    long_tailed_pool = True
    image_size = 224
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    augment = Augment(color_jitter=0.4)  # classifier-balancing data/dataloader.py:46
    default_recipe = "imagenet"
    default_backbone = "resnext50_32x4d"
    val_per_class = 0  # unused: the lists ship their own validation split
    list_prefix = ""
    splits = ("train", "val", "test")
    images_hint = ""  # what the images are and where to get them

    def list_dirs(self, root: Path) -> list[Path]:
        return [root, root / self.data_dir, root / "splits"]

    def _list_file(self, root: Path, split: str) -> Path:
        name = f"{self.list_prefix}_{split}.txt"
        dirs = self.list_dirs(root)
        for path in (d / n for d in dirs for n in (name, f"{name}.gz")):
            if path.is_file():
                return path
        raise _not_found(self, root, f" (no {name}[.gz] in {', '.join(str(d) for d in dirs)})")

    def _locate(self, root: Path) -> tuple[Path, dict[str, Path]]:
        """(image root, {split: list file}): the image root is where the train list's first path exists."""
        lists = {split: self._list_file(root, split) for split in self.splits}
        entry = next(_split_entries(lists["train"]), None)
        if entry is None:
            raise DataError(f"{lists['train']}: empty split list; {self.how_to_get()}")
        first = entry[0]
        for image_root in self.candidates(root):
            if (image_root / first).is_file():
                return image_root, lists
        tried = " or ".join(str(c / first) for c in self.candidates(root))
        raise DataError(f"dataset '{self.name}': lists found but not the images: {tried} does not exist; "
                        f"{self.how_to_get()}")

    def find(self, root: Path) -> Path | None:
        try:
            return self._locate(Path(root))[0]
        except DataError:
            return None

    def how_to_get(self) -> str:
        names = f"{self.list_prefix}_{{{','.join(self.splits)}}}.txt[.gz]"
        return (f"expected {names} in DIR, DIR/{self.data_dir}/ or DIR/splits/, with the images at the list "
                f"paths under DIR or DIR/{self.data_dir}/; {self.images_hint}; pass --data-root DIR "
                f"(--download cannot fetch this data set)")

    def load(self, root: Path, download: bool = False) -> Sources:
        root = Path(root)
        image_root, lists = self._locate(root)
        splits = {}
        for split, list_file in lists.items():
            paths, labels, lines = _read_list(list_file)
            if not paths:
                raise DataError(f"{list_file}: empty split list; {self.how_to_get()}")
            if labels.min() < 0 or labels.max() >= self.num_classes:
                raise DataError(f"{list_file}: labels must lie in 0..{self.num_classes - 1}, found "
                                f"{labels.min()}..{labels.max()}")
            if not (image_root / paths[0]).is_file():  # one stat per list: 100k stats would take minutes
                raise DataError(f"{list_file}: first image {image_root / paths[0]} does not exist (list paths "
                                f"are relative to {image_root}); {self.how_to_get()}")
            splits[split] = FileSplit(image_root, paths, labels, list_file, lines, _allow_outside_root())
        train = splits["train"]
        # class names from the folder of each class's first train image (wnid, scene or taxon id)
        names = [str(c) for c in range(self.num_classes)]
        present, first = np.unique(train.labels, return_index=True)
        for label, index in zip(present, first):
            names[label] = Path(train.paths[index]).parent.name
        info = {"layout": "split lists", "path": str(image_root), "cache": None,
                "lists": {split: str(path) for split, path in lists.items()}}
        if "test" not in splits:  # the val list is the test set: nothing is left to choose on (no val split)
            info["test"] = info["val"] = "the val list (no public test labels; papers report val)"
            return Sources(train, splits["val"], val=None, class_names=names, info=info)
        return Sources(train, splits["test"], val=splits["val"], class_names=names, info=info)


@register_dataset("imagenet-lt", summary="ImageNet-LT (Liu et al. 2019): 1,000 classes, 1,280 to 5 images")
class ImageNetLT(_SplitLists):
    num_classes = 1000
    data_dir, list_prefix = "ImageNet_LT", "ImageNet_LT"
    default_imbalance = 256.0  # informational: the published list's max/min count (1280/5)
    images_hint = ("images: ImageNet-2012 (image-net.org) as train/<wnid>/ and val/<wnid>/; lists: the OLTR "
                   "release (github.com/zhmiao/OpenLongTailRecognition-OLTR)")


@register_dataset("places-lt", summary="Places-LT (Liu et al. 2019): 365 classes, 4,980 to 5 images")
class PlacesLT(_SplitLists):
    num_classes = 365
    data_dir, list_prefix = "Places_LT", "Places_LT"
    default_imbalance = 996.0  # informational: 4980/5
    # classifier-balancing config/Places_LT/cls_crt.yaml:18: ResNet-152 (ImageNet-pretrained: --pretrained)
    default_backbone = "resnet152"
    default_recipe = "places"
    images_hint = ("images: Places365-Standard (places2.csail.mit.edu) as train/<scene>/ and val/<scene>/; "
                   "lists: the OLTR release (github.com/zhmiao/OpenLongTailRecognition-OLTR)")


@register_dataset("inat18", summary="iNaturalist 2018: 8,142 species, naturally long-tailed")
class INat18(_SplitLists):
    num_classes = 8142
    data_dir, list_prefix = "iNat18", "iNaturalist18"
    splits = ("train", "val")  # no public test labels: val serves as both val and test, as in papers
    # classifier-balancing data/dataloader.py:25-27 (iNat's own statistics) and :38-42 (no ColorJitter);
    # config/iNaturalist18/*.yaml: ResNet-50 and its own recipe
    mean, std = (0.466, 0.471, 0.380), (0.195, 0.194, 0.192)
    augment = Augment()
    default_backbone = "resnet50"
    default_recipe = "inat"
    default_imbalance = 500.0  # informational: 1000/2
    images_hint = ("images: the iNaturalist 2018 competition (github.com/visipedia/inat_comp) as train_val2018/"
                   "...; lists: iNaturalist18_{train,val}.txt as shipped with decoupling (Kang et al. 2020)")
