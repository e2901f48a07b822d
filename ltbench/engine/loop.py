"""The ONE training loop (one epoch of one stage) and evaluation."""
from __future__ import annotations

import time

import torch

from ..errors import TrainingDiverged
from ..method import Method, StageState
from ..models.heads import LTModel, Outputs
from .precision import autocast


def train_one_epoch(model: LTModel, method: Method, loader, optimizer: torch.optim.Optimizer, state: StageState,
                    generator: torch.Generator, precision: str, scaler=None, on_step=None,
                    rank: int = 0, world: int = 1, ddp_model=None) -> dict:
    """One pass over the stage's sampler stream. Returns loss, train accuracy, images/s."""
    stage, optim = state.stage, state.stage.optim
    device = state.data.device
    backbone_trains = stage.trainable == "all"
    model.train()
    if not backbone_trains:  # frozen features: BN statistics stay exactly as they were
        model.backbone.eval()
    feature_maps = method.feature_maps(stage)
    forward = ddp_model or model
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen = 0
    start = time.perf_counter()
    state.steps_per_epoch = loader.num_batches(optim.batch_size, world)
    sync_every = 1 if device.type == "cpu" else 25  # GPU: check for NaN without a sync per step
    recent: list[torch.Tensor] = []
    for step, batch in enumerate(loader.epoch(stage.sampler, generator, optim.batch_size, state.progress,
                                              rank, world)):
        state.step = step
        lr = optim.lr_at(state.epoch + (step + 1) / state.steps_per_epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        with autocast(device, precision):
            if backbone_trains:
                out = forward(batch["x"], feature_maps)
            else:
                with torch.no_grad():
                    features, maps = model.encode(batch["x"], feature_maps)
                out = Outputs(model.head(features), features, maps)
            loss = method.loss(out, batch, state)
        recent.append(loss.detach())
        if len(recent) >= sync_every:
            _check_finite(recent, state, step)
            recent.clear()
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        n = batch["y"].numel()
        loss_sum += loss.detach() * n
        correct += (out.logits.detach().argmax(1) == batch["y"]).sum()
        seen += n
        if on_step is not None:
            on_step(step, n)
    if recent:
        _check_finite(recent, state, state.step)
    seconds = time.perf_counter() - start
    return {"loss": float(loss_sum) / max(seen, 1), "train_acc": 100.0 * float(correct) / max(seen, 1),
            "lr": optimizer.param_groups[0]["lr"] if optimizer.param_groups else 0.0,
            "images": seen, "seconds": seconds, "images_per_s": seen / max(seconds, 1e-9)}


def _check_finite(losses: list[torch.Tensor], state: StageState, last_step: int) -> None:
    values = torch.stack(losses)
    finite = torch.isfinite(values)
    if not bool(finite.all()):
        bad_step = last_step - len(losses) + 1 + int((~finite).nonzero()[0])
        raise TrainingDiverged(
            f"loss became {float(values[~finite][0])} in stage '{state.stage.name}' at epoch {state.epoch + 1}, "
            f"step {bad_step + 1}; the last good checkpoint is kept. Lower --lr or check the method's loss")


@torch.inference_mode()
def evaluate(model: LTModel, loader, batch_size: int, precision: str, device: torch.device,
             with_features: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Logits (fp32 head on the backbone's features), labels and pooled features, in data order."""
    model.eval()
    logits, labels, features = [], [], []
    for batch in loader.batches(batch_size):
        with autocast(device, precision):
            feats, _ = model.encode(batch["x"])
        feats = feats.float()
        logits.append(model.head(feats).float())
        labels.append(batch["y"])
        if with_features:
            features.append(feats)
    return torch.cat(logits), torch.cat(labels), (torch.cat(features) if with_features else None)
