"""DaSL: Dynamic Auxiliary Soft Labels for decoupled learning (Wang, Zhang, Shen, Zhao, Neural Networks
151 (2022) 132-142), RECONSTRUCTED from its abstract (the full text is unavailable). Every inferred choice
is a switch, so benchmarks/dasl-ablation.toml can test it; the defaults are the most likely reading.

What the abstract confirms and the reconstruction: docs/protocol.md#dasl. How this module implements it
(its stages, and why the switches that change the stage list build them the way they do): docs/dasl.md.
"""
from __future__ import annotations

import copy
from contextlib import contextmanager
from dataclasses import replace

import torch
from torch import nn
from torch.nn import functional as F

from ltbench import Method, Stage, register_method
from ltbench.config import stable_hash
from ltbench.errors import ConfigError
from ltbench.models.auxiliary import AuxiliaryNetwork, aux_stage_indices

AUX = "dasl_aux"  # training-only extras (LTModel.head never reads them)
TEACHER = "dasl_teacher"


def mixed_target(labels: torch.Tensor, soft: torch.Tensor, beta: float) -> torch.Tensor:
    """Stage-2 target q = (1 - beta) onehot(y) + beta soft (soft: detached auxiliary distribution)."""
    onehot = F.one_hot(labels, soft.shape[1]).to(soft.dtype)
    return (1 - beta) * onehot + beta * soft.detach()


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return -(target * F.log_softmax(logits.float(), dim=1)).sum(1).mean()


def distill_kl(student_logits: torch.Tensor, teacher_probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 KL(teacher || student^T) (Hinton et al.: T^2 keeps gradient scales comparable across T)."""
    log_student = F.log_softmax(student_logits.float() / temperature, dim=1)
    return temperature ** 2 * F.kl_div(log_student, teacher_probs.detach().float(), reduction="batchmean")


def feature_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean squared distance of L2-normalised features (in [0, 4]); callers detach the teacher side."""
    return (F.normalize(a.float(), dim=1) - F.normalize(b.float(), dim=1)).pow(2).sum(1).mean()


class FrozenTeacher(nn.Module):
    """A finished DaSL stage-1 network (backbone + auxiliary network) that never trains: no gradients,
    and eval mode even when the runner calls ``model.train()`` (BN statistics stay frozen)."""

    def __init__(self, backbone: nn.Module, aux: AuxiliaryNetwork, indices: list[int]):
        super().__init__()
        self.backbone, self.aux, self.indices = backbone, aux, list(indices)
        self.requires_grad_(False)
        self.train(False)

    def train(self, mode: bool = True):
        return super().train(False)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _, maps = self.backbone.forward_intermediates(x, indices=self.indices)
        return self.aux(maps)


@register_method("dasl", summary="Dynamic Auxiliary Soft Labels (Wang et al. 2022, reconstructed): an auxiliary "
                 "multi-scale network whose online soft labels distil into stage 1 and soften stage 2")
class DaSL(Method):
    family = "DaSL"
    reference = "reconstructed from Wang et al. 2022 (docs/protocol.md)"
    defaults = {"aux_inputs": "multi", "soft_labels": "sample", "use_in": "both", "feature_distill": True,
                "distill_direction": "aux_to_main", "aux_stage2": "retrain", "temperature": 2.0,
                "lambda_soft": 1.0, "lambda_feat": 1.0, "ramp": 0.05, "beta": 0.5, "aux_width": 0, "stage2_bn": "train"}
    choices = {"aux_inputs": ("multi", "last"), "soft_labels": ("sample", "class", "static"),
               "use_in": ("both", "stage1", "stage2"), "distill_direction": ("aux_to_main", "main_to_aux"),
               "aux_stage2": ("retrain", "frozen"), "stage2_bn": ("train", "frozen")}
    # upper bounds a study of the method stays far inside, so an absurd value is refused before anything is built:
    # temperature: distillation uses T = 1..20 (Hinton et al. 2015: up to 20); at T = 100 the soft labels of any
    # realistic logits are uniform already. lambda_*: loss weights are swept over 0.1..10 in distillation and
    # auxiliary-head work; at 100 the cross-entropy term is a rounding error of the total. aux_width: 0 (auto) or
    # at most 2048, the widest feature of the references' backbones (ResNet-50/152, ResNeXt-50); the fused
    # residual block alone has 18 w^2 weights (75M at 2048, three ResNet-50s), so wider is no auxiliary head
    ranges = {"temperature": (0, 100, "(]"), "lambda_soft": (0, 100), "lambda_feat": (0, 100),
              "ramp": (0, 1), "beta": (0, 1), "aux_width": (0, 2048)}
    help = {
        "aux_inputs": "multi: fuse the last 3 backbone stage maps; last: the last map only (single-scale ablation)",
        "soft_labels": "sample: online per-sample p_a; class: per-class mean of the previous epoch's correct "
                       "auxiliary predictions (OLS-style); static: a frozen teacher = a finished default DaSL stage 1",
        "use_in": "both; stage1: stage 2 is plain cRT; stage2: stage 1 is plain CE (shared with CE/cRT), the "
                  "auxiliary network is then trained on the frozen features",
        "feature_distill": "on/off (true/false): the feature-level term lambda_f ||norm(h_m) - norm(phi(h_aux))||^2",
        "distill_direction": "aux_to_main: the auxiliary side is the stop-gradient teacher; main_to_aux: the "
                             "main network teaches the auxiliary one (both KL and feature terms)",
        "aux_stage2": "retrain: re-initialise and re-train the auxiliary head class-balanced before stage 2; "
                      "frozen: use the stage-1 auxiliary head as is",
        "temperature": "T of the soft labels p = softmax(z / T)",
        "lambda_soft": "weight of the T^2 KL term, reached after the ramp",
        "lambda_feat": "weight of the feature distillation term",
        "ramp": "fraction of stage 1 over which lambda_soft ramps linearly up from 0",
        "beta": "stage-2 target q = (1 - beta) onehot(y) + beta p_aux",
        "aux_width": "channels of the auxiliary network; 0: the main feature width capped at 256 (64 on ResNet-32)",
        "stage2_bn": "train: the frozen backbone's BN statistics follow the class-balanced batches in the stage-2 "
                     "stages, as cRT's references do; frozen: kept from stage 1",
    }

    def __init__(self, **options):
        super().__init__(**options)
        o = self.options
        if o["distill_direction"] == "main_to_aux" and o["soft_labels"] != "sample":
            raise ConfigError(f"dasl: soft_labels={o['soft_labels']} defines the auxiliary side's soft labels, so it "
                              f"needs distill_direction=aux_to_main (or use soft_labels=sample)")
        if o["soft_labels"] == "static" and o["use_in"] == "stage2":
            raise ConfigError("dasl: soft_labels=static replaces stage 1's soft labels, but use_in=stage2 trains "
                              "stage 1 with plain CE; use use_in=both or stage1")
        self.indices: list[int] = []
        self.class_targets: torch.Tensor | None = None  # soft_labels=class: (C, C), row c = target of class c
        self._sums = self._counts = None  # ... and this epoch's sums / counts of correct soft predictions
        self._initial: dict | None = None  # soft_labels=static: the run's initial weights (stage B restarts there)
        # the run's stages, each as the hooks that train it: which exist depends on the options alone, and
        # stages() is their declarations in this order, so a stage and its hooks cannot disagree
        if o["use_in"] == "stage2":
            parts = [Plain(self, "representation"), AuxNetwork(self)]
        elif o["soft_labels"] == "static":
            parts = [Distillation(self, "sample"), StaticDistillation(self, "static")]
        else:
            parts = [Distillation(self, o["soft_labels"])]
        if o["use_in"] == "stage1":
            parts.append(Plain(self, "classifier"))
        else:
            parts += [AuxClassifier(self)] if o["aux_stage2"] == "retrain" else []
            parts.append(SoftClassifier(self))
        self.parts: list[Part] = parts

    # declaration -----------------------------------------------------------------------------------
    def stages(self, recipe):
        return [part.declare(recipe) for part in self.parts]

    def aux_options(self) -> dict:
        """Options of every stage that runs the auxiliary network; soft_labels and temperature shape the
        method state (class-mode targets) that its artifact saves, so they belong to its key as well."""
        o = self.options
        return {"aux_inputs": o["aux_inputs"], "aux_width": o["aux_width"], "soft_labels": o["soft_labels"],
                "temperature": o["temperature"]}

    # hooks: those of the whole run here, each stage's in its part (stage_hooks) ---------------------------
    def stage_hooks(self, index):
        return self.parts[index]

    def new_aux(self, model, num_classes: int) -> AuxiliaryNetwork:
        return AuxiliaryNetwork.for_backbone(model.backbone, num_classes, self.options["aux_inputs"],
                                             self.options["aux_width"])

    @contextmanager
    def stage_rng(self, stage):
        """Seeds the CPU generator from (run seed, stage spec) for a stage's fresh modules, then restores it."""
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(int(stable_hash([self.seed, stage.spec()], 8), 16))
            yield

    def setup(self, model, data):
        self.indices = aux_stage_indices(model.backbone, self.options["aux_inputs"])
        self.num_classes = data.num_classes
        self.seed = torch.initial_seed()  # the runner has just seeded torch with the run's seed
        if self.options["use_in"] != "stage2":  # with stage2, stage 1 must stay CE's exact model (no extras)
            model.extras[AUX] = self.new_aux(model, data.num_classes)
        if self.options["soft_labels"] == "class":
            self.class_targets = torch.eye(data.num_classes, device=data.device)  # one-hot fallback
            self._sums = torch.zeros_like(self.class_targets)
            self._counts = torch.zeros(data.num_classes, device=data.device)
        if self.options["soft_labels"] == "static":
            self._initial = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def end_epoch(self) -> None:
        """soft_labels=class: this epoch's mean correct soft predictions become the next epoch's targets."""
        if self.class_targets is None:
            return
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(self._sums)
            torch.distributed.all_reduce(self._counts)
        seen = self._counts > 0  # classes without a correct prediction keep their previous target
        self.class_targets[seen] = self._sums[seen] / self._counts[seen, None]
        self._sums.zero_(), self._counts.zero_()  # zeroed here, not at epoch start: a resumed epoch keeps its sums

    @torch.no_grad()
    def accumulate(self, aux_logits: torch.Tensor, labels: torch.Tensor, temperature: float) -> None:
        """soft_labels=class: sum the softened distributions of correct auxiliary predictions per class."""
        if self.class_targets is None:
            return
        correct = aux_logits.argmax(1) == labels
        probs = F.softmax(aux_logits.float()[correct] / temperature, dim=1)
        self._sums.index_add_(0, labels[correct], probs)
        self._counts += torch.bincount(labels[correct], minlength=self.num_classes)

    # method state ----------------------------------------------------------------------------------
    def state_dict(self):
        if self.class_targets is None:
            return {}
        return {"class_targets": self.class_targets.cpu(), "sums": self._sums.cpu(), "counts": self._counts.cpu()}

    def load_state_dict(self, state):
        if self.class_targets is not None and "class_targets" in state:
            for name, attr in (("class_targets", "class_targets"), ("sums", "_sums"), ("counts", "_counts")):
                getattr(self, attr).copy_(state[name])


# the stages' hooks ---------------------------------------------------------------------------------------
class Part(Method):
    """The hooks of one DaSL stage: they share the method's state (the auxiliary network's feature maps,
    class-mode targets), and every stage but the static teacher's drops that teacher, so later artifacts
    and model.pt stay lean."""
    runs_aux = True  # the stage runs the auxiliary network: its feature maps, its class-mode targets

    def __init__(self, dasl: DaSL):
        self.dasl, self.name, self.options = dasl, dasl.name, dasl.options

    def declare(self, recipe) -> Stage:
        """The stage these hooks train."""
        raise NotImplementedError

    def feature_maps(self, stage):
        return self.dasl.indices if self.runs_aux else None

    def trainable_parameters(self, model, stage):
        params = super().trainable_parameters(model, stage)
        unused = list(model.extras[TEACHER].parameters()) if TEACHER in model.extras else []
        if AUX in model.extras and not stage.opts.get("feature_distill", True):
            unused += model.extras[AUX].adapter.parameters()  # gets no gradient (DDP would wait for one)
        unused = {id(p) for p in unused}
        return [p for p in params if id(p) not in unused]

    def on_stage_start(self, state):
        if TEACHER in state.model.extras:
            del state.model.extras[TEACHER]

    def on_epoch_end(self, state):
        if self.runs_aux:
            self.dasl.end_epoch()

    def state_dict(self):
        return self.dasl.state_dict()

    def load_state_dict(self, state):
        self.dasl.load_state_dict(state)


class Plain(Part):
    """A stage without the auxiliary network: the shared CE stage 1 (use_in=stage2), cRT's classifier
    (use_in=stage1); the base class's cross-entropy."""
    runs_aux = False

    def __init__(self, dasl: DaSL, role: str):
        super().__init__(dasl)
        self.role = role  # "representation" or "classifier"

    def declare(self, recipe):
        if self.role == "representation":
            return recipe.representation()
        return recipe.classifier(bn=self.options["stage2_bn"])


class Distillation(Part):
    """Stage 1: main and auxiliary networks trained together, each with CE, plus the ramped soft-label KL
    and the feature term between them."""

    def __init__(self, dasl: DaSL, soft_labels: str):
        super().__init__(dasl)
        self.soft_labels = soft_labels  # static's stage A trains with online (sample) soft labels

    def declare(self, recipe):
        o = self.options
        return recipe.representation(
            loss="dasl", **{**self.dasl.aux_options(), "soft_labels": self.soft_labels},
            feature_distill=o["feature_distill"], distill_direction=o["distill_direction"],
            lambda_soft=o["lambda_soft"], lambda_feat=o["lambda_feat"], ramp=o["ramp"])

    def teacher(self, state, batch, z_a, h_aux):
        """The teacher's (logits, features): the online auxiliary network's."""
        return z_a, h_aux

    def stage1_terms(self, out, batch, state) -> dict:
        """The weighted stage-1 loss terms (summed by ``loss``; separate so tests can probe each)."""
        opts, model, y = state.stage.opts, state.model, batch["y"]
        aux = model.extras[AUX]
        T = opts["temperature"]
        z_a, h_aux = aux(out.feature_maps)
        terms = {"ce_main": F.cross_entropy(out.logits.float(), y), "ce_aux": F.cross_entropy(z_a.float(), y)}
        ramp = opts["ramp"]
        lambda_s = opts["lambda_soft"] * (min(1.0, state.progress / ramp) if ramp > 0 else 1.0)
        teacher_logits, teacher_h = self.teacher(state, batch, z_a, h_aux)
        if opts["distill_direction"] == "aux_to_main":
            if opts["soft_labels"] == "class":
                soft = self.dasl.class_targets[y]
            else:
                soft = F.softmax(teacher_logits.detach().float() / T, dim=1)
            terms["soft"] = lambda_s * distill_kl(out.logits, soft, T)
        else:
            terms["soft"] = lambda_s * distill_kl(z_a, F.softmax(out.logits.detach().float() / T, dim=1), T)
        if opts["feature_distill"]:
            # RECONSTRUCTED: the stop-gradient protects the teacher NETWORK only; the adapter phi always
            # learns (inside the stop-gradient, as literally written, it would stay at its random init)
            if opts["distill_direction"] == "aux_to_main":
                distance = feature_distance(out.features, aux.adapter(teacher_h.detach()))
            else:
                distance = feature_distance(out.features.detach(), aux.adapter(h_aux))
            terms["feature"] = opts["lambda_feat"] * distance
        self.dasl.accumulate(z_a.detach(), y, T)
        return terms

    def loss(self, out, batch, state):
        return sum(self.stage1_terms(out, batch, state).values())


class StaticDistillation(Distillation):
    """soft_labels=static, stage B: a finished stage A (trained or loaded) is the frozen teacher, and the
    student restarts from the run's initial weights (a cached stage B then overwrites both, teacher included)."""

    def declare(self, recipe):
        return replace(super().declare(recipe), name="static-representation")

    def on_stage_start(self, state):
        model = state.model
        model.extras[TEACHER] = FrozenTeacher(copy.deepcopy(model.backbone), copy.deepcopy(model.extras[AUX]),
                                              self.dasl.indices)
        model.load_state_dict(self.dasl._initial, strict=False)

    def teacher(self, state, batch, z_a, h_aux):
        return state.model.extras[TEACHER](batch["x"])


class AuxNetwork(Part):
    """use_in=stage2: a fresh auxiliary network trained with CE on the frozen CE features."""

    def declare(self, recipe):
        return Stage("aux-network", optim=recipe.stage2, trainable="classifier", sampler="instance", loss="dasl",
                     options=self.dasl.aux_options())

    def trainable_parameters(self, model, stage):
        return list(model.extras[AUX].parameters())

    def on_stage_start(self, state):
        with self.dasl.stage_rng(state.stage):
            state.model.extras[AUX] = self.dasl.new_aux(state.model, state.data.num_classes).to(state.data.device)
        super().on_stage_start(state)

    def loss(self, out, batch, state):
        aux = state.model.extras[AUX]
        aux.train(True)
        z_a, _ = aux(out.feature_maps)
        self.dasl.accumulate(z_a.detach(), batch["y"], state.stage.opts["temperature"])
        return F.cross_entropy(z_a.float(), batch["y"])


class AuxClassifier(Part):
    """aux_stage2=retrain: the auxiliary classifier re-initialised and re-trained class-balanced on the frozen
    auxiliary features (BN statistics of the frozen parts kept)."""

    def declare(self, recipe):
        return recipe.classifier("aux-classifier", reinit=False, loss="dasl", bn=self.options["stage2_bn"],
                                 **self.dasl.aux_options())

    def trainable_parameters(self, model, stage):
        return list(model.extras[AUX].classifier.parameters())

    def on_stage_start(self, state):
        head = state.model.extras[AUX].classifier
        with self.dasl.stage_rng(state.stage):
            fresh = nn.Linear(head.in_features, head.out_features)
        head.load_state_dict(fresh.state_dict())
        super().on_stage_start(state)

    def loss(self, out, batch, state):
        aux = state.model.extras[AUX]
        aux.train(False)
        with torch.no_grad():
            h_aux = aux.features(out.feature_maps)
        z_a = aux.classifier(h_aux)
        self.dasl.accumulate(z_a.detach(), batch["y"], state.stage.opts["temperature"])
        return F.cross_entropy(z_a.float(), batch["y"])


class SoftClassifier(Part):
    """Stage 2: the main classifier on q = (1 - beta) onehot(y) + beta p_aux, the auxiliary network a fixed
    teacher."""

    def declare(self, recipe):
        return recipe.classifier(loss="dasl", beta=self.options["beta"], bn=self.options["stage2_bn"],
                                 **self.dasl.aux_options())

    def loss(self, out, batch, state):
        aux, y, opts = state.model.extras[AUX], batch["y"], state.stage.opts
        temperature = opts["temperature"]
        aux.train(False)  # frozen parts keep their BN statistics
        with torch.no_grad():
            z_a = aux.classifier(aux.features(out.feature_maps))
        self.dasl.accumulate(z_a, y, temperature)
        soft = self.dasl.class_targets[y] if opts["soft_labels"] == "class" else F.softmax(z_a.float() / temperature, 1)
        return soft_cross_entropy(out.logits, mixed_target(y, soft, opts["beta"]))
