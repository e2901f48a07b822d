"""The file-list data path (ImageNet-LT, Places-LT, iNat18): uint8 through the workers, normalised on the device."""
import os

import numpy as np
import pytest
import torch
from PIL import Image

from ltbench.data import Augment, FileSplit
from ltbench.data.loaders import FileLoader, default_workers

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@pytest.fixture(scope="module")
def split(tmp_path_factory) -> FileSplit:
    root = tmp_path_factory.mktemp("images")
    rng = np.random.RandomState(0)
    paths = []
    for i in range(10):
        size = (40 + 3 * i, 30 + 2 * i)  # varied sizes and aspect ratios, as in ImageNet
        Image.fromarray(rng.randint(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(root / f"{i}.jpg", quality=90)
        paths.append(f"{i}.jpg")
    Image.open(root / "9.jpg").convert("L").save(root / "9.jpg")  # a greyscale JPEG, as a few of ImageNet's
    return FileSplit(root, paths, np.arange(10) % 3)


def loader(split, workers):
    return FileLoader(split, 3, MEAN, STD, 24, torch.device("cpu"), workers, Augment())


def test_evaluation_batches_are_resize_crop_then_normalise(split):
    from torchvision.transforms import v2
    from torchvision.transforms.v2.functional import pil_to_tensor

    batches = list(loader(split, 0).batches(4))
    assert [len(b["y"]) for b in batches] == [4, 4, 2]
    x = torch.cat([b["x"] for b in batches])
    assert x.dtype == torch.float32 and x.shape == (10, 3, 24, 24) and x.is_contiguous(memory_format=torch.channels_last)
    assert torch.cat([b["idx"] for b in batches]).tolist() == list(range(10))
    crop = v2.Compose([v2.Resize(27, antialias=True), v2.CenterCrop(24)])  # 24 / 0.875 = 27
    with Image.open(split.root / "3.jpg") as image:
        expected = crop(pil_to_tensor(image.convert("RGB"))).float()[None] / 255
    expected = (expected - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    torch.testing.assert_close(x[3:4], expected, rtol=0, atol=1e-6)


def test_workers_give_the_same_batches_and_train_batches_are_augmented(split):
    eager = torch.cat([b["x"] for b in loader(split, 0).batches(4)])
    workers = loader(split, 2)
    assert torch.equal(torch.cat([b["x"] for b in workers.batches(4)]), eager)
    batches = list(workers.epoch("instance", torch.Generator().manual_seed(0), 4))
    seen = torch.cat([b["idx"] for b in batches]).tolist()  # whole batches only: 2 of 4, the short last one dropped
    assert len(seen) == len(set(seen)) == 8 and set(seen) <= set(range(10)) and workers.num_batches(4) == 2
    x = torch.cat([b["x"] for b in batches])
    assert x.shape == (8, 3, 24, 24) and x.dtype == torch.float32 and torch.isfinite(x).all()
    low, high = (0 - np.array(MEAN)) / np.array(STD), (1 - np.array(MEAN)) / np.array(STD)
    assert (x.amin((0, 2, 3)) >= torch.tensor(low, dtype=torch.float32) - 1e-5).all()
    assert (x.amax((0, 2, 3)) <= torch.tensor(high, dtype=torch.float32) + 1e-5).all()


def test_default_workers_share_the_cores_among_local_processes(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert default_workers() == 15
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    assert default_workers() == 1
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert default_workers() == 1
