"""Published numbers that `ltbench table --with-reference` prints next to our runs (docs/protocol.md).

Each entry says which setting it was measured in (dataset, imbalance factor, backbone, recipe); a table
shows an entry only where its runs share that setting, so a number is never set beside runs it cannot be
compared with. An entry measured with one configuration of a method (BagofTricks-LT's tau-norm: tau 1, bias
kept) also names it (``runs_of`` and ``options``) and is shown only beside runs of exactly that
configuration. Accuracies and ECE are in percent; None: not reported.
"""
from __future__ import annotations

from dataclasses import dataclass

SOURCES = {
    "BagofTricks-LT": "Zhang et al., Bag of Tricks for Long-Tailed Visual Recognition with Deep Convolutional "
                      "Neural Networks, AAAI 2021 (trick gallery; reported as error, stored as 100 - error)",
    "MiSLAS": "Zhong et al., Improving Calibration for Long-Tailed Recognition, CVPR 2021 (CIFAR-LT, ResNet-32)",
    "BagofTricks-LT gallery": "Zhang et al., BagofTricks-LT documents/trick_gallery.md at commit 3ae52f4 (runs on Cui "
                              "et al.'s CIFAR-LT copy, configs/cui_cifar; error, stored as 100 - error; its own "
                              "loss settings, e.g. sigmoid focal loss)",
    "Menon et al.": "Menon et al., Long-tail learning via logit adjustment, ICLR 2021: google-research "
                    "logit_adjustment/README.md, Results (example runs of that code, its own schedule)",
    "Kang et al.": "Kang et al., Decoupling Representation and Classifier for Long-Tailed Recognition, ICLR 2020 "
                   "(ImageNet-LT, ResNeXt-50)",
}


@dataclass(frozen=True)
class Reference:
    source: str  # a key of SOURCES
    method: str  # as the paper names it
    dataset: str  # ltbench dataset name
    imbalance: float | None  # None: the published split (ImageNet-LT)
    backbone: str
    recipe: str
    acc: float
    many_acc: float | None = None
    medium_acc: float | None = None
    few_acc: float | None = None
    ece: float | None = None
    runs_of: str | None = None  # with options: the ltbench method whose runs of that configuration it pairs with
    options: tuple[tuple[str, object], ...] = ()  # (option, value) a run must have to stand beside it

    @property
    def label(self) -> str:
        if self.options:
            return f"{self.method} [{self.source}, paper; beside {self.runs_of}[{_compact(self.options)}]]"
        return f"{self.method} [{self.source}, paper]"

    def pairs_with(self, method: str, options: dict | None) -> bool:
        """Whether runs of ``method`` with ``options`` are the configuration this number was measured with
        (always, for an entry that names none)."""
        if not self.options:
            return True
        options = options or {}
        return method == self.runs_of and all(k in options and options[k] == v for k, v in self.options)


def _compact(options: tuple[tuple[str, object], ...]) -> str:
    return ",".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(options))


def _cifar(source: str, method: str, numbers: dict[tuple[str, float], float | tuple[float, float]]) -> list[Reference]:
    refs = []
    for (dataset, imbalance), value in numbers.items():
        acc, ece = value if isinstance(value, tuple) else (value, None)
        refs.append(Reference(source, method, dataset, imbalance, "resnet32", "paper", acc, ece=ece))
    return refs


def _bag_of_tricks(method: str, c10_100: float, c10_50: float, c100_100: float, c100_50: float,
                   **condition) -> list[Reference]:
    numbers = {("cifar10-lt", 100): c10_100, ("cifar10-lt", 50): c10_50, ("cifar100-lt", 100): c100_100,
               ("cifar100-lt", 50): c100_50}
    return [Reference("BagofTricks-LT", method, dataset, imbalance, "resnet32", "paper", acc, **condition)
            for (dataset, imbalance), acc in numbers.items()]


def _gallery(method: str, errors: tuple[float, float, float, float]) -> list[Reference]:
    """BagofTricks-LT trick_gallery.md errors (C10 IF100, C10 IF50, C100 IF100, C100 IF50) as accuracies."""
    settings = [("cifar10-lt", 100), ("cifar10-lt", 50), ("cifar100-lt", 100), ("cifar100-lt", 50)]
    return _cifar("BagofTricks-LT gallery", method, {s: round(100 - e, 2) for s, e in zip(settings, errors)})


def _kang(method: str, many: float, medium: float, few: float, acc: float) -> Reference:
    return Reference("Kang et al.", method, "imagenet-lt", None, "resnext50_32x4d", "imagenet", acc,
                     many_acc=many, medium_acc=medium, few_acc=few)


REFERENCES: list[Reference] = [
    *_bag_of_tricks("CE", 70.36, 74.81, 38.32, 43.85),
    *_bag_of_tricks("cRT", 74.99, 80.17, 40.26, 45.36),
    *_bag_of_tricks("LWS", 72.63, 78.66, 40.16, 45.21),
    # tau 1 with the bias kept: configs/cao_cifar/two_stage/classifier_balance/tau_norm/*.yaml (TAU 1.0, BIAS True)
    # and lib/net/network.py:113-117@ce7859a (only classifier.weight is normalised)
    *_bag_of_tricks("tau-norm", 72.70, 79.78, 40.96, 45.69, runs_of="tau-norm", options=(("bias", "keep"), ("tau", 1.0))),
    *_bag_of_tricks("label smoothing (CE)", 72.81, 76.57, 38.44, 42.34),
    *_cifar("MiSLAS", "MiSLAS", {("cifar10-lt", 100): (82.5, 3.66), ("cifar10-lt", 50): (85.7, 2.01),
                                 ("cifar10-lt", 10): (90.0, 1.20), ("cifar100-lt", 100): (47.0, 4.83),
                                 ("cifar100-lt", 50): (52.3, 2.47), ("cifar100-lt", 10): (63.2, 1.73)}),
    # trick_gallery.md, "Re-weighting", "Mixup training" and "Two-stage training" (DRW, DRS) tables
    *_gallery("focal loss (sigmoid)", (30.88, 24.12, 62.59, 59.46)),
    *_gallery("ClassBalanceCE", (29.80, 22.91, 61.50, 57.98)),
    *_gallery("ClassBalanceFocal", (26.83, 21.71, 62.11, 57.70)),
    *_gallery("BalancedSoftmaxCE", (23.63, 20.07, 56.82, 54.55)),
    *_gallery("input mixup", (28.55, 21.83, 60.10, 55.25)),
    *_gallery("DRW + ClassBalanceCE", (26.87, 20.94, 61.57, 57.49)),
    *_gallery("DRW + LDAM loss", (24.61, 20.31, 59.08, 54.46)),
    *_gallery("DRS, class-balanced sampling", (27.08, 21.18, 58.66, 54.26)),
    *_cifar("Menon et al.", "post-hoc logit adjustment", {("cifar10-lt", 100): 77.32, ("cifar100-lt", 100): 44.07}),
    *_cifar("Menon et al.", "logit-adjusted loss", {("cifar10-lt", 100): 77.89, ("cifar100-lt", 100): 44.06}),
    _kang("CE", 65.9, 37.5, 7.7, 44.4),
    _kang("cRT", 61.8, 46.2, 27.4, 49.6),
    _kang("tau-norm", 59.1, 46.9, 30.7, 49.4),
    _kang("LWS", 60.2, 47.2, 30.3, 49.9),
]
