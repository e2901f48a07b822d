"""CIFAR ResNets (He et al. 2016, Sec. 4.2: 3 stages of 16/32/64 channels), registered with timm.

They keep timm's model contract (see timm/models/resnet.py) so that every method uses one code path
for ResNet-32 and any timm backbone: ``forward_features``, ``forward_head(x, pre_logits=True)``,
``get_classifier`` / ``reset_classifier``, ``forward_intermediates`` and ``feature_info``.
"""
from __future__ import annotations

from torch import nn
from torch.nn import functional as F
from timm.models import register_model


class PadShortcut(nn.Module):
    """He et al.'s option A shortcut: subsample by 2 and zero-pad the new channels (no parameters), as
    kaidic/LDAM-DRW models/resnet_cifar.py (LambdaLayer with F.pad, planes // 4 on each side)."""

    def __init__(self, in_chs: int, out_chs: int, stride: int):
        super().__init__()
        self.stride, self.extra = stride, out_chs - in_chs

    def forward(self, x):
        x = x[:, :, ::self.stride, ::self.stride]
        return F.pad(x, (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))


class BasicBlock(nn.Module):
    def __init__(self, in_chs: int, out_chs: int, stride: int = 1, shortcut: str = "A"):
        super().__init__()
        self.conv1 = nn.Conv2d(in_chs, out_chs, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_chs)
        self.conv2 = nn.Conv2d(out_chs, out_chs, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_chs)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_chs != out_chs:
            if shortcut == "A":  # the CIFAR-LT references' ResNet-32: 464,154 parameters on CIFAR-10
                self.shortcut = PadShortcut(in_chs, out_chs, stride)
            else:  # "B": 1x1 projection (He et al. option B; 466,906 parameters)
                self.shortcut = nn.Sequential(nn.Conv2d(in_chs, out_chs, 1, stride, bias=False),
                                              nn.BatchNorm2d(out_chs))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    def __init__(self, depth: int = 32, num_classes: int = 10, in_chans: int = 3, widths=(16, 32, 64),
                 drop_rate: float = 0.0, shortcut: str = "A", **_):
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        blocks = (depth - 2) // 6
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.conv1 = nn.Conv2d(in_chans, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        stages, in_chs, self.feature_info = [], widths[0], []
        for i, width in enumerate(widths):
            stride = 1 if i == 0 else 2
            layers = [BasicBlock(in_chs, width, stride, shortcut)] + [BasicBlock(width, width)
                                                                      for _ in range(blocks - 1)]
            stages.append(nn.Sequential(*layers))
            in_chs = width
            self.feature_info.append(dict(num_chs=width, reduction=2**i, module=f"layer{i + 1}"))
        self.layer1, self.layer2, self.layer3 = stages
        self.num_features = self.head_hidden_size = widths[-1]
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    # timm contract -------------------------------------------------------------------------------
    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()

    def forward_features(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        return self.layer3(self.layer2(self.layer1(x)))

    def forward_head(self, x, pre_logits: bool = False):
        x = self.global_pool(x).flatten(1)
        if self.drop_rate:
            x = F.dropout(x, self.drop_rate, self.training)
        return x if pre_logits else self.fc(x)

    def forward_intermediates(self, x, indices=None, norm: bool = False, stop_early: bool = False,
                              output_fmt: str = "NCHW", intermediates_only: bool = False):
        """Stage outputs as in timm: ``indices`` an int (last n stages) or a list of stage indices."""
        take = _take_indices(len(self.feature_info), indices)
        x = F.relu(self.bn1(self.conv1(x)))
        intermediates = []
        for i, stage in enumerate((self.layer1, self.layer2, self.layer3)):
            x = stage(x)
            if i in take:
                intermediates.append(x)
            if stop_early and i >= max(take):
                break
        return intermediates if intermediates_only else (x, intermediates)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


def _take_indices(num_stages: int, indices) -> list[int]:
    if indices is None:
        return list(range(num_stages))
    if isinstance(indices, int):
        return list(range(num_stages - indices, num_stages))
    return [i % num_stages for i in indices]


def _create(depth: int, pretrained: bool, **kwargs) -> CifarResNet:
    if pretrained:
        raise ValueError("CIFAR ResNets have no pretrained weights; drop --pretrained")
    kwargs.pop("pretrained_cfg", None), kwargs.pop("pretrained_cfg_overlay", None), kwargs.pop("cache_dir", None)
    return CifarResNet(depth=depth, **kwargs)


@register_model
def resnet20(pretrained: bool = False, **kwargs) -> CifarResNet:
    """CIFAR ResNet-20 (3 x 3 basic blocks, 16/32/64 channels)."""
    return _create(20, pretrained, **kwargs)


@register_model
def resnet32(pretrained: bool = False, **kwargs) -> CifarResNet:
    """CIFAR ResNet-32 (3 x 5 basic blocks, 16/32/64 channels): the CIFAR-LT backbone of LDAM-DRW,
    BagofTricks-LT, MiSLAS and DaSL."""
    return _create(32, pretrained, **kwargs)


@register_model
def resnet56(pretrained: bool = False, **kwargs) -> CifarResNet:
    """CIFAR ResNet-56 (3 x 9 basic blocks, 16/32/64 channels)."""
    return _create(56, pretrained, **kwargs)
