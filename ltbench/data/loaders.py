"""Two data paths behind one interface: ``epoch(kind, generator, batch_size)`` yields training batches
and ``batches(batch_size)`` yields evaluation batches, each a dict with x (float, normalised), y, idx.

- TensorLoader: small images (digits, MNIST, CIFAR) live on the training device as one uint8 tensor;
  sampling, cropping, flipping and normalising happen on whole batches there.
- FileLoader: big data sets (ImageNet-LT, Places-LT, iNat18) decode files in DataLoader workers.
"""
from __future__ import annotations

import os

import numpy as np
import torch

from ..errors import DataError
from .augment import normalize, random_crop_flip
from .base import ArraySplit, Augment, FileSplit
from .images import ImageTooLarge, open_image
from .samplers import IndexStream


def training_batches(images: int, batch_size: int) -> int:
    """Batches of a training epoch: whole ones only, as the references' loaders (BagofTricks-LT main/train.py:210-217
    ``drop_last=True``; classifier-balancing ends each epoch after ``int(len(train) / batch)`` steps,
    run_networks.py:57-63, 263-266), but one short batch where the data holds less than one."""
    return max(1, images // batch_size)


def shard(indices: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    """Each DDP rank takes every world-th index of the shared stream (padded to equal length)."""
    if world == 1:
        return indices
    per_rank = -(-len(indices) // world)
    padded = torch.cat([indices, indices[: per_rank * world - len(indices)]])
    return padded[rank::world]


class TensorLoader:
    def __init__(self, split: ArraySplit, num_classes: int, mean, std, augment: Augment, device: torch.device):
        self.device = device
        self.images = torch.from_numpy(np.array(split.images.transpose(0, 3, 1, 2), order="C")).to(device)  # writable copy
        self.labels = torch.from_numpy(split.labels.astype(np.int64)).to(device)
        self.mean = torch.tensor(mean, device=device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, device=device).view(1, -1, 1, 1)
        self.augment = augment
        self.stream = IndexStream(self.labels, num_classes)

    def __len__(self) -> int:
        return len(self.labels)

    def num_batches(self, batch_size: int, world: int = 1) -> int:
        return training_batches(len(self), batch_size * world)

    def epoch(self, kind: str, generator: torch.Generator, batch_size: int, progress: float = 0.0,
              rank: int = 0, world: int = 1, start_batch: int = 0):
        """Augmented batches of ``batch_size`` images (per rank).

        Under DDP every rank draws the same stream and the augmentation of each whole global batch
        (``batch_size * world`` images) from the same generator, then keeps its share ``[rank::world]``
        (what ``shard`` gives it, but for a short last batch): the ranks together see exactly the
        images, crops and flips of a one-process run, and the generator advances exactly as there.
        ``global_batch`` says how many images the global batch holds. ``start_batch`` skips batches
        (mid-epoch resume) but still draws their augmentation.
        """
        indices = self.stream.epoch(kind, generator, progress)
        step = batch_size * world
        for number in range(self.num_batches(batch_size, world)):  # a short last batch is dropped
            idx = indices[number * step:(number + 1) * step]
            images = random_crop_flip(self.images[idx], self.augment, generator)
            if number < start_batch:
                continue
            total = len(idx)
            if world > 1:
                if total < world:  # a last global batch with fewer images than ranks: repeat some
                    repeat = torch.arange(world, device=idx.device) % total
                    idx, images, total = idx[repeat], images[repeat], world
                idx, images = idx[rank::world], images[rank::world]
            yield {"x": normalize(images, self.mean, self.std), "y": self.labels[idx], "idx": idx,
                   "global_batch": total}

    def batches(self, batch_size: int, rank: int = 0, world: int = 1):
        indices = shard(torch.arange(len(self), device=self.device), rank, world)
        for start in range(0, len(indices), batch_size):
            idx = indices[start:start + batch_size]
            yield {"x": normalize(self.images[idx], self.mean, self.std), "y": self.labels[idx], "idx": idx}


class _Unreadable:
    """What a DataLoader worker returns for an image it cannot decode (instead of raising: a worker's
    exception reaches the main process as a multi-line traceback); the main process raises it as one line."""

    def __init__(self, message: str):
        self.message = message


def _collate(items: list):
    broken = next((item for item in items if isinstance(item, _Unreadable)), None)
    return broken if broken is not None else torch.utils.data.default_collate(items)


class _ListDataset(torch.utils.data.Dataset):
    def __init__(self, split: FileSplit, transform):
        self.split, self.transform = split, transform

    def __len__(self):
        return len(self.split)

    def __getitem__(self, index):
        from torchvision.transforms.v2.functional import pil_to_tensor

        path = self.split.root / self.split.paths[index]
        where = f", listed at {self.split.where(index)}" if self.split.list_file else ""
        try:
            with open_image(path) as image:  # convert() copies even an RGB image
                tensor = pil_to_tensor(image if image.mode == "RGB" else image.convert("RGB"))
        except ImageTooLarge as exc:  # a decompression bomb: refused before decoding, with the limit
            return _Unreadable(f"image {path}{where} {exc.detail} or remove its line, then start the run again")
        except Exception as exc:  # noqa: BLE001  truncated, empty, not an image, unreadable: PIL raises any of them
            return _Unreadable(f"cannot decode image {path}{where} ({type(exc).__name__}: "
                               f"{' '.join(str(exc).split())}); replace the file or remove its line, then start "
                               f"the run again")
        return self.transform(tensor), int(self.split.labels[index]), index


class _IndexSampler(torch.utils.data.Sampler):
    """Yields whatever epoch stream was set last (keeps persistent workers alive across epochs)."""

    def __init__(self):
        self.indices: list[int] = []

    def __iter__(self):
        return iter(self.indices)

    def __len__(self):
        return len(self.indices)


def default_workers() -> int:
    """DataLoader workers per training process: the cores this process may use, shared among the training
    processes on this machine (torchrun's LOCAL_WORLD_SIZE), less one for the process itself. Decoding JPEGs
    is what limits a GPU on ImageNet-sized images (results/speed.md: ~16-20 cores to feed ResNeXt-50 or ResNet-50
    on one H200-class GPU), so a fixed small number (8) would leave most of a GPU machine's cores idle."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return max(1, cores // local - 1)


class FileLoader:
    """Workers decode, crop and flip in uint8 and the batch crosses to the device as uint8 (from pinned memory,
    asynchronously): a quarter of the bytes of float32, and the float conversion and normalisation run on the
    device in one pass over the batch instead of per image on the decoding cores. Same values as normalising in
    the workers: the crop's resize already rounds to uint8."""

    def __init__(self, split: FileSplit, num_classes: int, mean, std, image_size: int, device: torch.device,
                 workers: int = 4, augment: Augment = Augment()):
        from torchvision.transforms import v2

        self.device = device
        self.labels = torch.from_numpy(split.labels.astype(np.int64))
        self.stream = IndexStream(self.labels, num_classes)
        self.mean = torch.tensor(mean, device=device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, device=device).view(1, -1, 1, 1)
        resize = int(round(image_size / 0.875))
        # classifier-balancing data/dataloader.py:38-48: RandomResizedCrop + flip (+ ColorJitter but on iNat)
        jitter = augment.color_jitter
        self.train_transform = v2.Compose([
            v2.RandomResizedCrop(image_size, antialias=True), v2.RandomHorizontalFlip(),
            *([v2.ColorJitter(brightness=jitter, contrast=jitter, saturation=jitter, hue=0)] if jitter else [])])
        self.eval_transform = v2.Compose([v2.Resize(resize, antialias=True), v2.CenterCrop(image_size)])
        self.split, self.workers = split, workers
        self._loaders: dict = {}

    def __len__(self) -> int:
        return len(self.labels)

    def num_batches(self, batch_size: int, world: int = 1) -> int:
        return training_batches(-(-len(self) // world), batch_size)  # of each rank's shard

    def _loader(self, train: bool, batch_size: int):
        key = (train, batch_size)
        if key not in self._loaders:
            sampler = _IndexSampler()
            dataset = _ListDataset(self.split, self.train_transform if train else self.eval_transform)
            # pinned batches make the copies below asynchronous; workers persist across the epochs of the train
            # loader (no re-forking, no lost prefetch), not for evaluation passes, which come once per stage and
            # would otherwise keep a second and third set of idle processes alive; prefetch_factor stays torch's
            # 2 batches per worker: with tens of workers that is already tens of batches ahead
            loader = torch.utils.data.DataLoader(
                dataset, batch_size=batch_size, sampler=sampler, num_workers=self.workers,
                pin_memory=self.device.type == "cuda", persistent_workers=train and self.workers > 0, drop_last=False,
                collate_fn=_collate)
            self._loaders[key] = (loader, sampler)
        return self._loaders[key]

    def _iterate(self, loader):
        for batch in loader:
            if isinstance(batch, _Unreadable):
                raise DataError(batch.message)
            x, y, idx = batch
            x = x.to(self.device, non_blocking=True)
            yield {"x": normalize(x, self.mean, self.std), "y": y.to(self.device, non_blocking=True),
                   "idx": idx.to(self.device, non_blocking=True)}

    def epoch(self, kind: str, generator: torch.Generator, batch_size: int, progress: float = 0.0,
              rank: int = 0, world: int = 1, start_batch: int = 0):
        loader, sampler = self._loader(True, batch_size)
        indices = shard(self.stream.epoch(kind, generator, progress).cpu(), rank, world)
        sampler.indices = indices[start_batch * batch_size:self.num_batches(batch_size, world) * batch_size].tolist()
        yield from self._iterate(loader)

    def batches(self, batch_size: int, rank: int = 0, world: int = 1):
        loader, sampler = self._loader(False, batch_size)
        sampler.indices = shard(torch.arange(len(self)), rank, world).tolist()
        yield from self._iterate(loader)
