"""Published numbers that `ltbench table --with-reference` prints next to our runs (docs/protocol.md,
"Reference numbers").

Each entry says which setting it was measured in (dataset, imbalance factor, backbone, recipe) and where it
was read (``source``, a key of SOURCES, and ``where``: file, line and config at a commit); a table shows an
entry only where its runs share that setting, so a number is never set beside runs it cannot be compared
with. An entry measured with one configuration of a method (BagofTricks-LT's tau-norm: tau 1, bias kept)
also names it (``runs_of`` and ``options``) and is shown only beside runs of exactly that configuration. An
entry whose run differs from ltbench's recipe in more than the method says how (``differs``); its label
carries it. Accuracies and ECE are in percent; None: not reported.
"""
from __future__ import annotations

from dataclasses import dataclass

GALLERY = "zhangyongshun/BagofTricks-LT documents/trick_gallery.md"

SOURCES = {
    "BagofTricks-LT gallery": "BagofTricks-LT's trick gallery as the repository keeps it now: documents/trick_gallery.md "
                              "at commit ce7859a (configs/cao_cifar: LDAM-DRW's CIFAR-LT copy, ResNet-32, 200 epochs, "
                              "x0.01 at 160 and 180; reported as error, stored as 100 - error). Not the AAAI 2021 "
                              "paper's table; an older gallery (commit 3ae52f4, configs/cui_cifar, CE 69.88) is "
                              "superseded and not used",
    "MiSLAS README": "dvlab-research/MiSLAS README.md at commit 0fc381e, 'Results and Models' (released models of "
                     "its code, ResNet-32, 200 epochs): stage-1 mixup lines 95-102, stage-2 MiSLAS lines 106-113",
    "MiSLAS paper (CVPR slides)": "Zhong et al., Improving Calibration for Long-Tailed Recognition, CVPR 2021: the "
                                  "paper's CIFAR-LT table as the authors' slides print it (dvlab-research/MiSLAS "
                                  "assets/MiSLAS.pdf page 11 at commit 0fc381e; the paper PDF itself was not read)",
    "Menon et al. README": "Menon et al., Long-tail learning via logit adjustment, ICLR 2021: google-research "
                           "logit_adjustment/README.md 'Results' (lines 75-78 at commit 21efedb), example runs of that "
                           "code: its own bottleneck ResNet-32 (models.py) for 1,241 epochs on CIFAR-10-LT and 1,419 "
                           "on CIFAR-100-LT (utils.py dataset_mappings), not ltbench's paper recipe",
    "Kang et al. README": "Kang et al., Decoupling Representation and Classifier for Long-Tailed Recognition, ICLR "
                          "2020: facebookresearch/classifier-balancing README.md:138-144 at commit f162ade "
                          "(ImageNet-LT, ResNeXt-50, 'Classifier learning')",
}


@dataclass(frozen=True)
class Reference:
    source: str  # a key of SOURCES
    method: str  # as the source names it
    dataset: str  # ltbench dataset name
    imbalance: float | None  # None: the published split (ImageNet-LT)
    backbone: str
    recipe: str
    acc: float
    many_acc: float | None = None
    medium_acc: float | None = None
    few_acc: float | None = None
    ece: float | None = None
    where: str = ""  # line and config in the source
    runs_of: str | None = None  # with options: the ltbench method whose runs of that configuration it pairs with
    options: tuple[tuple[str, object], ...] = ()  # (option, value) a run must have to stand beside it
    differs: str = ""  # how the published run differs from ltbench's recipe beyond the method ("": it does not)

    @property
    def label(self) -> str:
        notes = [self.source]
        if self.options:
            notes.append(f"beside {self.runs_of}[{','.join(f'{k}={_text(v)}' for k, v in sorted(self.options))}]")
        if self.differs:
            notes.append(f"another configuration: {self.differs}")
        return f"{self.method} [{'; '.join(notes)}]"

    def pairs_with(self, method: str, options: dict | None) -> bool:
        """Whether runs of ``method`` with ``options`` are the configuration this number was measured with
        (always, for an entry that names none)."""
        if not self.options:
            return True
        options = options or {}
        return method == self.runs_of and all(k in options and options[k] == v for k, v in self.options)


def _text(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


CIFAR_SETTINGS = [("cifar10-lt", 100), ("cifar10-lt", 50), ("cifar100-lt", 100), ("cifar100-lt", 50)]


def _cifar(source: str, method: str, numbers: dict[tuple[str, float], float | tuple[float, float]],
           **extra) -> list[Reference]:
    refs = []
    for (dataset, imbalance), value in numbers.items():
        acc, ece = value if isinstance(value, tuple) else (value, None)
        refs.append(Reference(source, method, dataset, imbalance, "resnet32", "paper", acc, ece=ece, **extra))
    return refs


def _gallery(method: str, line: int, config: str, errors: tuple[float, float, float, float],
             **extra) -> list[Reference]:
    """One row of the gallery at ce7859a (line ``line``): its errors (C10 IF100, C10 IF50, C100 IF100, C100 IF50)
    as accuracies, from the configs under configs/cao_cifar/``config``."""
    where = f"{GALLERY}:{line}@ce7859a, configs/cao_cifar/{config}"
    return _cifar("BagofTricks-LT gallery", method, {s: round(100 - e, 2) for s, e in zip(CIFAR_SETTINGS, errors)},
                  where=where, **extra)


def _mislas(source: str, method: str, where: str, c10: tuple, c100: tuple) -> list[Reference]:
    """(acc, ECE) at IF 100, 50, 10 on CIFAR-10-LT and CIFAR-100-LT."""
    numbers = {("cifar10-lt", f): v for f, v in zip((100, 50, 10), c10)}
    numbers.update({("cifar100-lt", f): v for f, v in zip((100, 50, 10), c100)})
    return _cifar(source, method, numbers, where=where)


def _kang(method: str, line: int, many: float | None, medium: float | None, few: float | None,
          acc: float) -> Reference:
    return Reference("Kang et al. README", method, "imagenet-lt", None, "resnext50_32x4d", "imagenet", acc,
                     many_acc=many, medium_acc=medium, few_acc=few,
                     where=f"facebookresearch/classifier-balancing README.md:{line}@f162ade")


MENON = "1,241 epochs (CIFAR-100-LT 1,419), bottleneck ResNet-32"
MENON_WHERE = "google-research logit_adjustment/README.md:75-78@21efedb"

REFERENCES: list[Reference] = [
    # the gallery's "Classifier-balancing" table (lines 91-96) and its baseline, which heads every table
    *_gallery("Baseline (CE)", 93, "baseline/", (29.64, 25.19, 61.68, 56.15)),
    *_gallery("cRT (Classifier Re-training)", 95, "two_stage/classifier_balance/cRT/", (25.01, 19.83, 59.74, 54.64)),
    *_gallery("LWS (Learnable Weight Scaling)", 96, "two_stage/classifier_balance/LWS/",
              (27.37, 21.34, 59.84, 54.79)),
    # TEST.TAU_NORM.TAU 1.0, CLASSIFIER.BIAS True, and lib/net/network.py:113-117 normalises the weight only
    *_gallery("Tau_normalization", 94, "two_stage/classifier_balance/tau_norm/", (27.30, 20.22, 59.04, 54.31),
              runs_of="tau-norm", options=(("bias", "keep"), ("tau", 1.0))),
    # "Re-weighting" table
    *_gallery("CrossEntropyLabelSmooth", 20, "re_weighting/cels/", (27.19, 23.43, 61.56, 57.66)),  # EPSILON 0.1
    *_gallery("Focal loss", 17, "re_weighting/focal/", (28.44, 22.09, 62.78, 58.21)),  # sigmoid (focal_loss.py), GAMMA 2
    *_gallery("ClassBalanceFocal", 18, "re_weighting/cbfocal/", (24.80, 21.01, 61.44, 57.63)),  # sigmoid, GAMMA 1
    *_gallery("ClassBalanceCE", 19, "re_weighting/cbce/", (29.52, 22.52, 61.03, 56.22)),
    *_gallery("BalancedSoftmaxCE", 25, "re_weighting/bsce/", (22.46, 18.89, 57.01, 53.45)),
    # "Mixup training" table: 400 epochs, x0.01 at 320 and 360, ALPHA 1.0
    *_gallery("Input mixup", 46, "mixup/input_mixup/ (*_im_alpha10.yaml)", (25.94, 21.33, 59.18, 54.08),
              differs="400 epochs"),
    # "Two-stage training": the DRW table (first stage CE, START_EPOCH 160) and the DRS table
    *_gallery("DRW, ClassBalanceCE", 62, "two_stage/drw/cbce/", (25.36, 20.65, 60.79, 56.63)),
    *_gallery("DRW, LDAM loss", 65, "two_stage/drw/ldam/", (22.27, 18.40, 57.53, 52.71)),
    *_gallery("DRS, Class-balanced sampling", 79, "two_stage/drs/balance/", (24.93, 19.27, 59.36, 54.58)),
    # MiSLAS: the released models (README) and the paper's table; they differ at CIFAR-10-LT IF100 (82.5 / 82.1)
    *_mislas("MiSLAS README", "MiSLAS", "dvlab-research/MiSLAS README.md:106-113@0fc381e",
             ((82.5, 3.66), (85.7, 2.01), (90.0, 1.20)), ((47.0, 4.83), (52.3, 2.47), (63.2, 1.73))),
    *_mislas("MiSLAS paper (CVPR slides)", "MiSLAS", "dvlab-research/MiSLAS assets/MiSLAS.pdf p. 11@0fc381e",
             ((82.1, 3.70), (85.7, 2.17), (90.0, 1.20)), ((47.0, 4.83), (52.3, 2.25), (63.2, 1.73))),
    *_mislas("MiSLAS README", "stage-1 mixup", "dvlab-research/MiSLAS README.md:95-102@0fc381e",
             ((72.8, 2.14), (78.1, 2.49), (87.6, 11.9)), ((39.5, 8.82), (45.4, 4.33), (59.1, 5.24))),
    *_cifar("Menon et al. README", "Baseline (ERM)", {("cifar10-lt", 100): 71.36, ("cifar100-lt", 100): 39.87},
            where=MENON_WHERE, differs=MENON),
    *_cifar("Menon et al. README", "Post-hoc logit adjustment", {("cifar10-lt", 100): 77.32,
                                                                 ("cifar100-lt", 100): 44.07},
            where=MENON_WHERE, differs=MENON),
    *_cifar("Menon et al. README", "Logit adjustment loss", {("cifar10-lt", 100): 77.89, ("cifar100-lt", 100): 44.06},
            where=MENON_WHERE, differs=MENON),
    _kang("Joint (CE)", 140, 65.9, 37.5, 7.7, 44.4),
    _kang("NCM", 141, 56.6, 45.3, 28.1, 47.3),
    _kang("cRT", 142, 61.8, 46.2, 27.4, 49.6),
    _kang("Tau-normalization", 143, 59.1, 46.9, 30.7, 49.4),
    _kang("LWS", 144, 60.2, 47.2, 30.3, 49.9),
]
