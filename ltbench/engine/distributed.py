"""Distributed data parallel under torchrun: one process per device, rank 0 does every file write.

Choices (see docs/reliability.md):

- process group from torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT): NCCL on
  GPUs (one per LOCAL_RANK), gloo on CPU;
- the recipe's batch size is the global batch: each rank takes ``batch_size / world`` images of every
  global batch, so the schedule, the learning rate and its linear batch-size rule stay the recipe's;
- stages that train the backbone are wrapped in DistributedDataParallel; the others (classifier,
  scales) have a few thousand parameters: their gradients are averaged with one flat all-reduce;
- BatchNorm normalises over the global batch, as in a one-process run: PyTorch's SyncBatchNorm on GPUs,
  ``GlobalBatchNorm2d`` below on CPU (PyTorch's has no CPU kernels); running statistics are broadcast
  from rank 0 after every epoch, so all ranks evaluate and save the same model;
- evaluation is sharded (every rank evaluates 1/world of the set) and the logits, labels and features are
  all-gathered, so every rank holds the full arrays (post-hoc steps such as tau-norm or NCM then make
  the same choice on every rank) and rank 0 writes them.
"""
from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import ConfigError, LTBenchError


@dataclass
class Distributed:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device | None = None
    _group_owned: bool = field(default=False, repr=False)

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # collectives (no-ops in one process) -------------------------------------------------------------
    def barrier(self) -> None:
        if self.enabled:
            torch.distributed.barrier()

    def broadcast_object(self, obj):
        if not self.enabled:
            return obj
        box = [obj]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def on_main(self, fn):
        """Run ``fn`` on rank 0 only; every rank returns its result, or raises the LTBenchError it raised
        (marked ``reported_on_rank0`` on the other ranks, so the message is printed once)."""
        result, error = None, None
        if self.is_main:
            try:
                result = fn()
            except LTBenchError as exc:
                error = exc
        if self.enabled:
            result, error = self.broadcast_object((result, error))
        if error is not None:
            if not self.is_main:
                error.reported_on_rank0 = True
            raise error
        return result

    def any(self, *flags: bool) -> list[bool]:
        """Logical OR of each flag over the ranks (one small all-reduce)."""
        if not self.enabled:
            return [bool(f) for f in flags]
        tensor = torch.tensor([float(bool(f)) for f in flags], device=self.device)
        torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.MAX)
        return [bool(v) for v in tensor.tolist()]

    def broadcast_tensors(self, tensors) -> None:
        if self.enabled:
            for tensor in tensors:
                torch.distributed.broadcast(tensor.data, src=0)

    def average_gradients(self, params) -> None:
        """Mean of each gradient over the ranks (one flat all-reduce; for the small non-DDP stages)."""
        grads = [p.grad for p in params if p.grad is not None]
        if not self.enabled or not grads:
            return
        from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

        flat = _flatten_dense_tensors(grads)
        torch.distributed.all_reduce(flat)
        flat.div_(self.world)
        for grad, synced in zip(grads, _unflatten_dense_tensors(flat, grads)):
            grad.copy_(synced)

    def gather_rows(self, local: torch.Tensor, total: int) -> torch.Tensor:
        """Inverse of ``loaders.shard``: rank r evaluated rows r, r + world, ... of the padded set."""
        if not self.enabled:
            return local
        parts = [torch.empty_like(local) for _ in range(self.world)]
        torch.distributed.all_gather(parts, local.contiguous())
        return torch.stack(parts, 1).reshape(-1, *local.shape[1:])[:total]

    def close(self) -> None:
        if self._group_owned and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
            self._group_owned = False


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env(device_name: str = "auto") -> Distributed:
    """One process: a no-op. Under torchrun (WORLD_SIZE > 1): join the process group."""
    if not launched_by_torchrun():
        return Distributed()
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    use_cuda = torch.cuda.is_available() and (device_name == "auto" or device_name.startswith("cuda"))
    if device_name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda asked for, but torch sees no CUDA GPU; use --device cpu")
    if use_cuda:
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(f"local rank {local_rank} but only {torch.cuda.device_count()} GPU(s) visible: "
                              f"pass --nproc_per_node <= {torch.cuda.device_count()} to torchrun")
        device, backend = torch.device("cuda", local_rank), "nccl"
        torch.cuda.set_device(device)
    else:
        device, backend = torch.device("cpu"), "gloo"
    owned = not torch.distributed.is_initialized()
    if owned:
        # generous timeout: rank 0 may wait for another run's stage lock while the others wait for it
        torch.distributed.init_process_group(backend, timeout=dt.timedelta(hours=2))
    return Distributed(rank, world, local_rank, device, owned)


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks whose gradient is the sum of the ranks' gradients (every rank's loss sees every input)."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        total = tensor.clone()
        torch.distributed.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        torch.distributed.all_reduce(grad)
        return grad


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are those of the global batch (all ranks), for CPU / gloo.

    Per-channel sum, sum of squares and count go through one differentiable all-reduce, so forward and
    backward are those of a one-process BatchNorm over the whole batch (up to float rounding); same
    parameters and buffers as BatchNorm2d, so checkpoints and artifacts are interchangeable.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1):
            return super().forward(x)
        channels = x.shape[1]
        flat = x.float()
        count = flat.new_tensor([x.numel() / channels])
        stats = _AllReduceSum.apply(torch.cat([flat.sum((0, 2, 3)), (flat * flat).sum((0, 2, 3)), count]))
        total = stats[-1]
        mean = stats[:channels] / total
        var = (stats[channels:2 * channels] / total - mean * mean).clamp_min(0)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                self.running_mean.mul_(1 - momentum).add_(mean.detach(), alpha=momentum)
                unbiased = var.detach() * (total / (total - 1).clamp_min(1))
                self.running_var.mul_(1 - momentum).add_(unbiased, alpha=momentum)
        scale = torch.rsqrt(var + self.eps)
        shift = -mean * scale
        if self.affine:
            scale, shift = scale * self.weight, shift * self.weight + self.bias
        return (x * scale[None, :, None, None].to(x.dtype) + shift[None, :, None, None].to(x.dtype))


def sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Batch statistics over all ranks: torch's SyncBatchNorm on GPUs (timm's converter, which knows its
    BatchNormAct layers), GlobalBatchNorm2d for plain BatchNorm2d on CPU. Parameters and buffers are the
    same objects, so an optimizer built before keeps working. Idempotent."""
    if device.type == "cuda":
        from timm.layers import convert_sync_batchnorm

        return convert_sync_batchnorm(module)
    if type(module) is nn.BatchNorm2d:
        converted = GlobalBatchNorm2d(module.num_features, module.eps, module.momentum, module.affine,
                                      module.track_running_stats)
        if module.affine:
            converted.weight, converted.bias = module.weight, module.bias
        converted.running_mean, converted.running_var = module.running_mean, module.running_var
        converted.num_batches_tracked = module.num_batches_tracked
        converted.train(module.training)
        return converted
    for name, child in module.named_children():
        converted = sync_batchnorm(child, device)
        if converted is not child:
            setattr(module, name, converted)
    return module
