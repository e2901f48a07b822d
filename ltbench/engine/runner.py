"""The stage runner: resolves a RunConfig, reuses cached stages, trains the rest, writes the run files."""
from __future__ import annotations

import datetime as dt
import platform
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from ..config import RunConfig, Stage, get_recipe, scaled_optim, stable_hash
from ..data import DataBundle, build_data
from ..errors import ConfigError, DataError
from ..method import DataInfo, Method, StageState, create_method
from ..metrics import classification_metrics
from ..models import build_model
from ..models.heads import LTModel
from ..results.store import RunStore, append_jsonl, read_json, write_json, write_text
from .checkpoint import load_artifact, save_artifact, save_state
from .loop import evaluate, train_one_epoch
from .precision import resolve_device, resolve_precision
from .progress import Reporter


@dataclass
class Plan:
    """A resolved run: what will be trained or reused, under which keys."""

    config: RunConfig
    method: Method
    data: DataBundle
    recipe_name: str
    backbone: str
    stages: list[Stage]
    keys: list[str]
    run_key: str
    device: torch.device
    precision: str
    notices: list[str] = field(default_factory=list)



def data_spec(dataset: str, data: DataBundle) -> dict:
    """What identifies the training data of a stage: the LT subset rule and its seed."""
    info = data.info
    return {"dataset": dataset, "imbalance": info.get("imbalance"), "profile": info.get("profile"),
            "subset_seed": info.get("subset_seed"), "val_per_class": info.get("val_per_class"),
            "train_size": info["train_size"]}


def stage_keys(data_spec: dict, backbone: str, pretrained: bool, seed: int, precision: str,
               stages: list[Stage]) -> list[str]:
    """key_i = hash(data subset, backbone, seed, precision, key_{i-1}, spec_i): a changed setting anywhere
    upstream is a new key, and two methods whose first stages agree share their artifacts."""
    keys, previous = [], None
    for stage in stages:
        previous = stable_hash({"data": data_spec, "backbone": backbone, "pretrained": pretrained, "seed": seed,
                                "precision": precision, "previous": previous, "stage": stage.spec()})
        keys.append(previous)
    return keys


def plan_run(config: RunConfig, download: bool = False) -> Plan:
    """Everything up to (not including) training: cheap, so `sweep --dry-run` uses it too."""
    method = create_method(config.method, config.method_options, config.plugins)
    data = build_data(config.dataset, config.data_root, config.imbalance, config.profile, config.subset_seed,
                      config.val_per_class, download)
    source = data.source
    recipe = get_recipe(config.recipe or source.default_recipe)
    notices: list[str] = []
    stage1 = scaled_optim(recipe.stage1, config.batch_size, config.lr, config.epochs, notices, "stage 1")
    stage2 = scaled_optim(recipe.stage2, config.batch_size, config.stage2_lr, config.stage2_epochs, notices, "stage 2")
    recipe = replace(recipe, stage1=stage1, stage2=stage2)
    stages = method.stages(recipe)
    device = resolve_device(config.device)
    precision = resolve_precision(config.precision, device)
    backbone = config.backbone or source.default_backbone
    keys = stage_keys(data_spec(config.dataset, data), backbone, config.pretrained, config.seed,
                      precision, stages)
    run_key = stable_hash({"method": config.method, "options": method.options, "final_stage": keys[-1]})
    return Plan(config, method, data, recipe.name, backbone, stages, keys, run_key, device, precision, notices)


def _git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                              text=True, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _versions() -> dict:
    import timm
    import torchvision

    from .. import __version__

    return {"ltbench": __version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
            "timm": timm.__version__, "numpy": np.__version__, "python": platform.python_version()}


def default_run_name(config: RunConfig, plan: Plan) -> str:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S-%f")[:-3]
    imbalance = plan.data.info.get("imbalance")
    imb = f"-if{imbalance:g}" if imbalance else ""
    return f"{config.method}-{config.dataset}{imb}-s{config.seed}-{stamp}"


def _seed_all(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


class StageRunner:
    """Runs the stages of a plan in one run folder."""

    def __init__(self, plan: Plan, store: RunStore, run_dir: Path, reporter: Reporter):
        self.plan, self.store, self.run_dir, self.reporter = plan, store, run_dir, reporter
        config, data = plan.config, plan.data
        self.device = plan.device
        self.loaders = {split: data.loader(split, self.device, config.workers) for split in ("train", "val", "test")}
        counts = torch.as_tensor(data.class_counts, device=self.device)
        from ..data.longtail import shot_groups

        self.info = DataInfo(data.num_classes, counts, torch.as_tensor(shot_groups(data.class_counts), device=self.device),
                             data.source.channels, data.source.image_size, self.device)
        _seed_all(config.seed)
        self.model = build_model(plan.backbone, data.num_classes, data.source.channels, config.pretrained)
        plan.method.setup(self.model, self.info)
        self.model.to(self.device).to(memory_format=torch.channels_last)
        self.stage_records: list[dict] = []

    # helpers --------------------------------------------------------------------------------------
    def evaluate_split(self, split: str, features_only: bool = False):
        logits, labels, features = evaluate(self.model, self.loaders[split], self.plan.config.eval_batch_size,
                                            self.plan.precision, self.device)
        return (features, labels) if features_only else (logits, labels, features)

    def _state(self, index: int, stage: Stage) -> StageState:
        return StageState(stage, index, self.info, self.model, epochs=stage.epochs,
                          evaluate=self.evaluate_split, log=self.reporter.log)

    def _optimizer(self, stage: Stage) -> torch.optim.Optimizer | None:
        params = [p for p in self.plan.method.trainable_parameters(self.model, stage)]
        for p in self.model.parameters():
            p.requires_grad_(False)
        for p in params:
            p.requires_grad_(True)
        if not params or stage.epochs == 0:
            return None
        o = stage.optim
        return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay, nesterov=o.nesterov)

    def _stage_metrics(self) -> dict:
        logits, labels, features = self.evaluate_split("test")
        metrics, _ = classification_metrics(logits.cpu(), labels.cpu(), self.plan.data.class_counts, features.cpu())
        return metrics

    # stages ---------------------------------------------------------------------------------------
    def run(self) -> None:
        plan = self.plan
        for index, (stage, key) in enumerate(zip(plan.stages, plan.keys)):
            state = self._state(index, stage)
            plan.method.on_stage_start(state)
            cacheable = stage.trainable != "none"  # post-hoc stages take seconds: not worth an artifact
            if cacheable and self.store.has_stage(key):
                meta = load_artifact(self.store.stage_dir(key), self.model, plan.method, self.device)
                self.reporter.log(f"stage {index + 1} ({stage.name}): reused {key} (trained by run "
                                  f"'{meta.get('trained_by')}')")
                self.stage_records.append({"name": stage.name, "key": key, "reused": True,
                                           "trained_by": meta.get("trained_by"), "metrics": meta.get("metrics"),
                                           "post": meta.get("post"), "spec": stage.spec()})
                continue
            record = self.train_stage(index, stage, key, state)
            if cacheable:
                save_artifact(self.store.stage_dir(key), self.model, plan.method,
                              {"key": key, "stage": stage.spec(), "trained_by": self.run_dir.name,
                               "metrics": record["metrics"], "post": record["post"],
                               "created": dt.datetime.now().isoformat(timespec="seconds")})
            self.stage_records.append(record)

    def train_stage(self, index: int, stage: Stage, key: str, state: StageState) -> dict:
        plan = self.plan
        torch.manual_seed(int(key[:8], 16))  # a stage starts the same whether stage 1 was trained or reused
        generator = torch.Generator(device=self.device).manual_seed(int(key[8:12], 16))
        if stage.reinit_classifier:
            self.model.backbone.reset_classifier(plan.data.num_classes)
            self.model.to(self.device)
        optimizer = self._optimizer(stage)
        scaler = torch.amp.GradScaler("cuda") if plan.precision == "fp16" else None
        started = time.perf_counter()
        train_loader = self.loaders["train"]
        if optimizer is not None:
            steps = train_loader.num_batches(stage.optim.batch_size)
            with self.reporter.stage(index, len(plan.stages), stage, key, steps) as bar:
                for epoch in range(stage.epochs):
                    state.epoch = epoch
                    plan.method.on_epoch_start(state)
                    stats = train_one_epoch(self.model, plan.method, train_loader, optimizer, state, generator,
                                            plan.precision, scaler, on_step=bar.step)
                    plan.method.on_epoch_end(state)
                    bar.epoch_done(epoch, stats)
                    append_jsonl(self.run_dir / "epochs.jsonl",
                                 {"stage": stage.name, "stage_index": index, "epoch": epoch + 1, **stats})
        else:
            self.reporter.log(f"stage {index + 1}/{len(plan.stages)} ({stage.name}): no training")
        post = plan.method.post_stage(state) or {}
        metrics = self._stage_metrics()
        seconds = time.perf_counter() - started
        return {"name": stage.name, "key": key, "reused": False, "trained_by": self.run_dir.name,
                "metrics": metrics, "post": post, "seconds": seconds, "spec": stage.spec()}


def execute(config: RunConfig, reporter: Reporter | None = None, download: bool = False) -> dict:
    """Plan, train and write one run. Returns its metrics (also in <out>/runs/<name>/metrics.json)."""
    reporter = reporter or Reporter()
    started = time.perf_counter()
    plan = plan_run(config, download)
    for notice in plan.notices:
        reporter.log(notice)
    store = RunStore(config.out)
    store.check_writable()
    run_name = config.run_name or default_run_name(config, plan)
    run_dir = store.create_run(run_name)
    data = plan.data
    write_json(run_dir / "config.json", resolved_config(plan, run_name))
    (run_dir / "epochs.jsonl").touch()  # stays empty when every stage is reused or post-hoc
    if data.train_indices is not None:
        np.savez_compressed(run_dir / "subset.npz", train_indices=data.train_indices, val_indices=data.val_indices,
                            class_counts=data.class_counts)
    reporter.log(f"run '{run_name}': {config.method} on {config.dataset} ({_describe(plan)}) -> {run_dir}")
    runner = StageRunner(plan, store, run_dir, reporter)
    runner.run()
    logits, labels, features = runner.evaluate_split("test")
    metrics, per_class = classification_metrics(logits.cpu(), labels.cpu(), data.class_counts, features.cpu())
    metrics.update(stages=runner.stage_records, wall_time_s=time.perf_counter() - started, run_name=run_name,
                   run_key=plan.run_key, status="complete")
    np.savez_compressed(run_dir / "test_logits.npz", logits=logits.cpu().numpy().astype(np.float32),
                        labels=labels.cpu().numpy().astype(np.int64))
    header = "class,train_count,test_count,correct,acc,group\n"
    write_text(run_dir / "per_class.csv", header + "".join(
        f"{r['class']},{r['train_count']},{r['test_count']},{r['correct']},{r['acc']:.4f},{r['group']}\n"
        for r in per_class))
    save_state(run_dir / "model.pt", {"model": runner.model.state_dict(), "method": plan.method.state_dict()})
    write_json(run_dir / "metrics.json", metrics)  # written last: its presence marks a finished run
    reporter.summary(config.method, plan, metrics)
    return metrics


def _describe(plan: Plan) -> str:
    info = plan.data.info
    parts = [f"IF {info['imbalance']:g}" if info.get("imbalance") else "published LT split",
             f"train {info['train_size']}", f"backbone {plan.backbone}", f"recipe {plan.recipe_name}",
             f"seed {plan.config.seed}", f"{plan.device.type} {plan.precision}"]
    return ", ".join(parts)


def resolved_config(plan: Plan, run_name: str) -> dict:
    config = plan.config.to_dict()
    data_info = {k: v for k, v in plan.data.info.items() if k != "class_names"}
    config.update(
        run_name=run_name, run_key=plan.run_key, method_options=plan.method.options,
        imbalance=plan.data.info.get("imbalance"), backbone=plan.backbone, recipe=plan.recipe_name,
        device=str(plan.device), precision=plan.precision,
        stages=[{"name": s.name, "key": k, **s.spec()} for s, k in zip(plan.stages, plan.keys)],
        data=data_info, class_counts=plan.data.class_counts.tolist(), notices=plan.notices,
        versions=_versions(), git_commit=_git_commit(), host=socket.gethostname(), command=sys.argv,
        created=dt.datetime.now().isoformat(timespec="seconds"), torch_threads=torch.get_num_threads(),
    )
    return config
