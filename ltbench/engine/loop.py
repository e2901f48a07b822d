"""The ONE training loop (one epoch of one stage) and evaluation."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from ..config import SAMPLERS
from ..errors import ConfigError, TrainingDiverged
from ..method import Method, StageState
from ..models.heads import LTModel, Outputs
from .precision import autocast


@dataclass
class EpochProgress:
    """How far an epoch got: saved by a mid-epoch checkpoint, handed back to the loop on resume."""

    step: int = 0  # steps done
    loss_sum: torch.Tensor | None = None
    correct: torch.Tensor | None = None
    seen: int = 0
    seconds: float = 0.0


class EpochInterrupted(Exception):
    """A stop was requested; ``progress`` says where the epoch stands (the runner saves it)."""

    def __init__(self, progress: EpochProgress):
        super().__init__(f"interrupted after step {progress.step}")
        self.progress = progress


@dataclass
class LoopControl:
    """What the runner lends the loop besides model and data: distribution and interruption."""

    rank: int = 0
    world: int = 1
    ddp_model: torch.nn.Module | None = None  # DDP wrapper of the model (stages training the backbone)
    reduce_gradients: Callable[[], None] | None = None  # gradient averaging of the other stages under DDP
    any_rank: Callable[..., list] = field(default=lambda *flags: [bool(f) for f in flags])  # OR over ranks
    sum_over_ranks: Callable[[torch.Tensor], torch.Tensor] = field(default=lambda tensor: tensor)
    stop_requested: Callable[[], bool] = lambda: False
    on_step: Callable[[int, int], None] | None = None


def train_one_epoch(model: LTModel, method: Method, loader, optimizer: torch.optim.Optimizer, state: StageState,
                    generator: torch.Generator, precision: str, scaler=None, control: LoopControl | None = None,
                    resume: EpochProgress | None = None) -> dict:
    """One pass over the stage's sampler stream. Returns loss, train accuracy, images/s.

    ``stage.optim.batch_size`` is the global batch; under DDP each rank takes 1/world of every global batch.
    ``resume`` continues an epoch after its first ``resume.step`` steps (the loader still draws their
    augmentation, so the generator ends up where an uninterrupted epoch leaves it).
    """
    control = control or LoopControl()
    stage, optim = state.stage, state.stage.optim
    device = state.data.device
    backbone_trains = stage.trainable == "all"
    model.train()
    if not backbone_trains and stage.bn == "frozen":  # frozen features, BN statistics exactly as they were
        model.backbone.eval()  # (bn="train": the statistics follow the stage's sampler, as classifier-balancing)
    feature_maps = method.feature_maps(stage)
    forward = control.ddp_model or model
    world = control.world
    batch_size = optim.batch_size // world
    progress = resume or EpochProgress()
    loss_sum = progress.loss_sum.to(device) if progress.loss_sum is not None else torch.zeros((), device=device)
    correct = (progress.correct.to(device) if progress.correct is not None
               else torch.zeros((), device=device, dtype=torch.long))
    seen, first = progress.seen, progress.step
    start = time.perf_counter() - progress.seconds
    state.steps_per_epoch = loader.num_batches(batch_size, world)
    state.step = 0  # the sampler sees the progress at the start of the epoch (progressive sampling)
    sampler = method.sampler(state)
    if sampler not in SAMPLERS:
        raise ConfigError(f"method '{method.name}' chose sampler {sampler!r} for epoch {state.epoch + 1} of stage "
                          f"'{stage.name}'; choose one of {', '.join(SAMPLERS)}")
    batches = loader.epoch(sampler, generator, batch_size, state.progress, control.rank, world,
                           start_batch=first)
    sync_every = 1 if device.type == "cpu" else 25  # GPU: check for NaN without a sync per step
    recent: list[torch.Tensor] = []
    lr = optim.lr_at(state.epoch)  # one rate per epoch, as the references' schedulers (config.Optim)
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
    for step, batch in enumerate(batches, first):
        state.step = step
        batch = method.transform_batch(batch, state)  # e.g. mixup: inputs and targets of the batch
        with autocast(device, precision):
            if backbone_trains:
                out = forward(batch["x"], feature_maps)
            else:
                with torch.no_grad():
                    features, maps = model.encode(batch["x"], feature_maps)
                out = Outputs(model.head(features), features, maps)
            loss = method.loss(out, batch, state)
        recent.append(loss.detach())
        n = batch["y"].numel()
        # DDP averages the ranks' gradients; weighting each rank's mean loss by its share of the global
        # batch makes that the gradient of the global batch's mean loss (ranks differ only in a last batch)
        objective = loss * (n * world / batch["global_batch"]) if world > 1 and "global_batch" in batch else loss
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(objective).backward()
            if control.reduce_gradients:
                control.reduce_gradients()
            scaler.step(optimizer)
            scaler.update()
        else:
            objective.backward()
            if control.reduce_gradients:
                control.reduce_gradients()
            optimizer.step()
        loss_sum += loss.detach() * n
        correct += (out.logits.detach().argmax(1) == batch["y"]).sum()
        seen += n
        if control.on_step is not None:
            control.on_step(step, n)
        last = step + 1 == state.steps_per_epoch
        if len(recent) >= sync_every or last:
            stop = _diverged_or_stop(recent, state, step, control)
            recent.clear()
            if stop and not last:  # at the last step the runner saves an epoch-end checkpoint instead
                # this rank's own sums (the runner saves one per rank): a resumed epoch then adds up in the
                # same order as an uninterrupted one, and its log line is bit-identical under DDP too
                raise EpochInterrupted(EpochProgress(step + 1, loss_sum.detach().cpu(), correct.cpu(), seen,
                                                     time.perf_counter() - start))
    loss_sum, correct, seen = _epoch_sums_over_ranks(loss_sum, correct, seen, control)
    seconds = time.perf_counter() - start
    return {"loss": float(loss_sum) / max(seen, 1), "train_acc": 100.0 * float(correct) / max(seen, 1),
            "lr": optimizer.param_groups[0]["lr"] if optimizer.param_groups else 0.0,
            "images": seen, "seconds": seconds, "images_per_s": seen / max(seconds, 1e-9)}


def _epoch_sums_over_ranks(loss_sum: torch.Tensor, correct: torch.Tensor, seen: int, control: LoopControl):
    """Sums over all ranks (the epoch's log line describes the global batch stream, not rank 0's share)."""
    if control.world == 1:
        return loss_sum.detach(), correct.detach(), seen
    totals = control.sum_over_ranks(torch.stack([loss_sum.detach().double(), correct.double(),
                                                 torch.tensor(float(seen), dtype=torch.float64,
                                                              device=loss_sum.device)]))
    return totals[0].float(), totals[1].long(), int(totals[2])


def _diverged_or_stop(losses: list[torch.Tensor], state: StageState, last_step: int, control: LoopControl) -> bool:
    """Raise TrainingDiverged on a non-finite loss (on every rank at once); return whether to stop."""
    values = torch.stack(losses)
    finite = torch.isfinite(values)
    diverged, stop = control.any_rank(not bool(finite.all()), control.stop_requested())
    if diverged:
        if bool(finite.all()):
            where, value = f"after step {last_step + 1} (on another rank)", "non-finite"
        else:
            bad = int((~finite).nonzero()[0])
            where, value = f"step {last_step - len(losses) + 1 + bad + 1}", float(values[bad])
        raise TrainingDiverged(
            f"loss became {value} in stage '{state.stage.name}' at epoch {state.epoch + 1}, {where}; the last "
            f"good checkpoint is kept. Lower --lr or check the method's loss, and start a new run")
    return stop


@torch.inference_mode()
def evaluate(model: LTModel, loader, batch_size: int, precision: str, device: torch.device,
             with_features: bool = True, rank: int = 0, world: int = 1
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Logits (fp32 head on the backbone's features), labels and pooled features, in data order
    (with ``world`` > 1: of this rank's shard, see ``Distributed.gather_rows``)."""
    model.eval()
    logits, labels, features = [], [], []
    for batch in loader.batches(batch_size, rank, world):
        with autocast(device, precision):
            feats, _ = model.encode(batch["x"])
        feats = feats.float()
        logits.append(model.head(feats).float())
        labels.append(batch["y"])
        if with_features:
            features.append(feats)
    return torch.cat(logits), torch.cat(labels), (torch.cat(features) if with_features else None)
