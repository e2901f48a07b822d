"""The registered datasets: where each one's files may live, how they are read and how to get them.

Every loader accepts the layout torchvision's download produces plus the layouts found in the wild
(bare IDX folders, CIFAR image folders, published split lists). When the data is missing or broken it
raises ONE DataError line naming the file or folder, the accepted layouts and the fix.

One module per kind of source: ``memory`` (digits-lt, synthetic), ``mnist`` (IDX files), ``cifar`` (python
pickles or image folders, decoded and cached by ``image_folders``), ``split_lists`` (ImageNet-LT, Places-LT,
iNat18); ``common`` holds what they share. Importing this package registers them all.
"""
from __future__ import annotations

from .cifar import Cifar10, Cifar100, _Cifar, _read_pickle  # noqa: F401
from .common import _TorchvisionSource  # noqa: F401
from .image_folders import CACHE_ENV, IMAGE_SUFFIXES, cache_candidates  # noqa: F401
from .memory import Digits, Synthetic  # noqa: F401
from .mnist import FashionMnist, Mnist, read_idx  # noqa: F401
from .split_lists import (IMAGENET_MEAN, IMAGENET_STD, OUTSIDE_ROOT_ENV, INat18, ImageNetLT, PlacesLT,  # noqa: F401
                          _SplitLists, read_split_list)
