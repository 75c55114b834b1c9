"""The local trainer: the recipe's optimiser and rate schedule on the blended Cox losses of the heads.

What the ClientApp calls:
    train_local(model, train_loader, val_loader, cfg, global_state=None, blend_weights=None) -> LocalTrainResult
    evaluate(model, loader, ties) -> Evaluation      (per-head loss statistics + risks; risks stay at the site)

Cox risk sets (cfg.risk_set):
  "batch"  the forward batch is the risk set and one optimiser step is taken per batch (MMNN_STS);
  R        chunks of R patients: pass 1 runs the chunk's micro-batches without gradients, the
           chunk's Cox loss gives d loss / d log-risk, pass 2 re-runs each micro-batch (same
           inputs, same dropout draws, batch-norm buffers restored) and back-propagates that
           gradient: the exact gradient of the R-patient partial likelihood at micro-batch memory;
  "site"   R = the whole training split: the site's stratum is the risk set, one step per epoch.
Chunk modes keep one chunk's input batches in memory.

Blend weights: fixed when `blend_weights` is given (a federation server computes them); else a
local BlendState (cfg.blend_mode) updated every cfg.blend_interval epochs from per-head training-
and validation-set losses, each split taken as one risk set. With `train_eval_loader` (the
training split without augmentation) both losses of a checkpoint are measured the same way, in
eval mode on the checkpoint's model, and the initial model is checkpoint 0 (first update after
blend_interval epochs, not 2 x blend_interval). Without it the training loss is the epoch's running
one (train mode: augmented inputs, per-batch norm statistics, the model changing during the epoch,
as MMNN_STS), whose change between checkpoints mixes those effects into the overfitting estimate O.
Model selection: the epoch with the lowest UNWEIGHTED fused-head validation loss (MMNN paper).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from stsfl.client.progress import progress_bar
from stsfl.client.training.optimizer import make_optimizer
from stsfl.client.training.privacy import DpSgd, attach_dp, poisson_batches
from stsfl.client.training.training_plots import save_training_plot
from stsfl.common.atomic_file import atomic_path
from stsfl.common.batch import SurvivalBatch
from stsfl.common.blending import BlendState, Checkpoint, HeadLossStats
from stsfl.common.config.train import ScheduleWindow, TrainConfig
from stsfl.common.cox import Ties
from stsfl.common.head_losses import blended_loss, head_loss_stats, head_losses
from stsfl.tasks.multimodal.model import FUSED


@dataclass
class Evaluation:
    """Per-head loss statistics of one split (the split is the risk set) and, kept at the site,
    its patients' log-risks {head: [N, K]} with their labels [N, K]."""

    stats: HeadLossStats
    pids: list[str]
    risks: dict[str, np.ndarray]
    time: np.ndarray
    event: np.ndarray
    observed: np.ndarray


@dataclass
class LocalTrainResult:
    """What a round of local training produces. `state` is the selected weights (best fused
    validation loss, or the last epoch); the statistics belong to the last epoch."""

    state: dict[str, torch.Tensor]
    train_stats: HeadLossStats
    val_stats: HeadLossStats | None
    n_examples: int
    n_events: tuple[int, ...]
    best_epoch: int
    blend: BlendState
    history: list[dict] = field(default_factory=list)
    dp_steps: int = 0
    dp_sample_rate: float = 0.0


def make_loader(dataset: Dataset, batch_size: int, collate_fn, shuffle: bool, seed: int = 0) -> DataLoader:
    """A DataLoader whose shuffling is fixed by `seed` (deterministic runs)."""
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, collate_fn=collate_fn, generator=generator)


class _Labels:
    """Collects the outputs and labels of a split's batches to score the split as one risk set."""

    def __init__(self) -> None:
        self.outputs: dict[str, list[torch.Tensor]] = {}
        self.parts: dict[str, list[torch.Tensor]] = {"time": [], "event": [], "endpoint_observed": [], "modality_present": []}
        self.pids: list[str] = []

    def add(self, outputs: Mapping[str, torch.Tensor], batch: SurvivalBatch) -> None:
        for head, value in outputs.items():
            self.outputs.setdefault(head, []).append(value.detach().float().cpu())
        for name, values in self.parts.items():
            values.append(getattr(batch, name).detach().cpu())
        self.pids += batch.pids

    def tensors(self) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        return {h: torch.cat(v) for h, v in self.outputs.items()}, {n: torch.cat(v) for n, v in self.parts.items()}

    def stats(self, ties: Ties) -> HeadLossStats:
        outputs, labels = self.tensors()
        return head_loss_stats(outputs, ties=ties, **labels)


def _autocast(device: torch.device, cfg: TrainConfig):
    return torch.autocast("cuda", dtype=torch.float16, enabled=cfg.amp and device.type == "cuda")


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def evaluate(model: nn.Module, loader: DataLoader, ties: Ties = "efron") -> Evaluation:
    """Eval-mode log-risks of every patient in `loader` and the per-head losses with the whole
    split as the risk set."""
    device = _device_of(model)
    model.eval()
    collected = _Labels()
    with torch.no_grad():
        for batch in loader:
            batch = batch.to(device)
            collected.add(model(batch), batch)
    outputs, labels = collected.tensors()
    return Evaluation(
        stats=head_loss_stats(outputs, ties=ties, **labels),
        pids=collected.pids,
        risks={h: v.numpy() for h, v in outputs.items()},
        time=labels["time"].numpy(),
        event=labels["event"].numpy(),
        observed=labels["endpoint_observed"].numpy(),
    )


def _chunks(loader: DataLoader, micro_batches: int) -> Iterator[list[SurvivalBatch]]:
    chunk: list[SurvivalBatch] = []
    for batch in loader:
        chunk.append(batch)
        if len(chunk) == micro_batches:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _micro_batches_per_step(cfg: TrainConfig, loader: DataLoader) -> int:
    """Forward batches per optimiser step: 1 for "batch", all of them for "site", ceil(R / batch) for R."""
    if cfg.risk_set == "batch":
        return 1
    if cfg.risk_set == "site":
        return max(len(loader), 1)
    return max(math.ceil(cfg.risk_set / loader.batch_size), 1)


class _Stepper:
    """One optimiser step: blended loss (+ FedProx), AMP scaling, clipping, the optimiser, the rate.

    Step i takes the rate of step first_step + i of the recipe's schedule over total_steps: the
    window of the whole training (pooled run or federation) that this call covers."""

    def __init__(
        self,
        model: nn.Module,
        cfg: TrainConfig,
        first_step: float,
        total_steps: float,
        global_state: Mapping[str, torch.Tensor] | None,
    ):
        self.model, self.cfg = model, cfg
        self.device = _device_of(model)
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = make_optimizer(self.params, cfg)
        self.step_index, self.first_step, self.total_steps = 0, first_step, max(total_steps, 1)
        self._set_rate()
        self.scaler = torch.amp.GradScaler("cuda", enabled=cfg.amp and self.device.type == "cuda")
        self.anchor = None
        if global_state is not None and cfg.prox_mu > 0:
            named = dict(model.named_parameters())
            # Parameters the global state lacks (e.g. FedBN's local norm layers) are not anchored.
            self.anchor = {
                name: global_state[name].detach().to(self.device)
                for name, p in named.items()
                if p.requires_grad and name in global_state
            }

        self.dp_optimizer = None

    @staticmethod
    def on_window(
        model: nn.Module,
        cfg: TrainConfig,
        window: ScheduleWindow | None,
        epochs: int,
        steps_per_epoch: int,
        global_state: Mapping[str, torch.Tensor] | None,
    ) -> _Stepper:
        """A stepper whose `epochs` x `steps_per_epoch` steps cover `window` of the schedule (None:
        the schedule spans exactly these epochs)."""
        window = window or ScheduleWindow(start_epoch=0, total_epochs=epochs, span_epochs=epochs)
        per_schedule_epoch = epochs * steps_per_epoch / window.span_epochs
        return _Stepper(
            model, cfg, window.start_epoch * per_schedule_epoch, window.total_epochs * per_schedule_epoch, global_state
        )

    @property
    def rate(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def _set_rate(self) -> None:
        rate = self.cfg.learning_rate_at(self.first_step + self.step_index, self.total_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = rate

    def make_private(self, dp: DpSgd, expected_batch_size: int):
        """DP-SGD from here on (per-patient clipping replaces clip_grad_norm_; no AMP scaling).
        Returns the hooked module; close it with `._close()`."""
        self.scaler = torch.amp.GradScaler("cuda", enabled=False)
        hooked, self.dp_optimizer = attach_dp(self.model, self.optimizer, dp, expected_batch_size)
        return hooked

    def backward(self, loss: torch.Tensor) -> None:
        self.scaler.scale(loss).backward()

    def _add_prox(self) -> None:
        if self.anchor is not None:
            # FedProx: the gradient of mu/2 ||w - w_global||^2, added as if it were in the loss
            # (after DP noise: it does not depend on the data).
            with torch.no_grad():
                for name, p in self.model.named_parameters():
                    if name in self.anchor and p.grad is not None:
                        p.grad.add_(p - self.anchor[name], alpha=self.cfg.prox_mu)

    def step(self) -> None:
        if self.dp_optimizer is not None:
            if self.dp_optimizer.pre_step():  # clip per patient, sum, add noise, scale -> .grad
                self._add_prox()
                self.optimizer.step()
            self.dp_optimizer.zero_grad(set_to_none=True)
        else:
            self.scaler.unscale_(self.optimizer)
            self._add_prox()
            if self.cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(self.params, self.cfg.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
        self.step_index += 1
        self._set_rate()


def _norm_buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: b.clone() for name, b in model.named_buffers()}


def _rng_state(device: torch.device):
    return torch.get_rng_state(), (torch.cuda.get_rng_state(device) if device.type == "cuda" else None)


def _set_rng_state(state, device: torch.device) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)


def _train_chunk(
    chunk: list[SurvivalBatch], stepper: _Stepper, weights: Mapping[str, float], cfg: TrainConfig, seen: _Labels
) -> float:
    """One optimiser step over `chunk` (the chunk is the risk set); returns the blended loss.
    An empty chunk (DP-SGD's Poisson sampling drew nobody) is a noise-only step."""
    if not chunk:
        for p in stepper.params:
            p.grad_sample = torch.zeros((0, *p.shape), dtype=p.dtype, device=p.device)
        stepper.step()
        return float("nan")
    loss = accumulate_chunk_gradients(stepper.model, [b.to(stepper.device) for b in chunk], weights, cfg, stepper.backward, seen)
    stepper.step()
    return loss


def accumulate_chunk_gradients(
    model: nn.Module,
    chunk: list[SurvivalBatch],
    weights: Mapping[str, float],
    cfg: TrainConfig,
    backward=torch.Tensor.backward,
    seen: _Labels | None = None,
) -> float:
    """Add to the parameters' .grad the gradient of the blended Cox loss of all patients in `chunk`
    taken as one risk set, running one micro-batch at a time (two passes when there are several)."""
    device = _device_of(model)
    seen = seen if seen is not None else _Labels()
    if len(chunk) == 1:
        with _autocast(device, cfg):
            outputs = model(chunk[0])
        loss = blended_loss(head_losses(outputs, chunk[0], cfg.ties), weights)
        backward(loss)
        seen.add(outputs, chunk[0])
        return loss.item()

    # Pass 1: log-risks of the whole chunk without a graph; remember dropout draws and buffers.
    buffers = _norm_buffers(model)
    rng_states, outputs_per_batch = [], []
    with torch.no_grad():
        for batch in chunk:
            rng_states.append(_rng_state(device))
            with _autocast(device, cfg):
                outputs_per_batch.append({h: v.float() for h, v in model(batch).items()})
        for name, b in model.named_buffers():
            b.copy_(buffers[name])
    leaves = {h: torch.cat([o[h] for o in outputs_per_batch]).requires_grad_(True) for h in outputs_per_batch[0]}
    loss = blended_loss(head_losses(leaves, _concat_labels(chunk), cfg.ties), weights)
    loss.backward()
    # Pass 2: re-run each micro-batch with its slice of d loss / d log-risk.
    start = 0
    for batch, rng in zip(chunk, rng_states):
        _set_rng_state(rng, device)
        with _autocast(device, cfg):
            outputs = model(batch)
        stop = start + len(batch)
        backward(sum((outputs[h].float() * leaves[h].grad[start:stop]).sum() for h in outputs))
        seen.add(outputs, batch)
        start = stop
    return loss.item()


def _concat_labels(chunk: list[SurvivalBatch]) -> SurvivalBatch:
    cat = lambda name: torch.cat([getattr(b, name) for b in chunk])  # noqa: E731
    return SurvivalBatch(
        pids=[p for b in chunk for p in b.pids],
        mri=torch.empty(0),
        wsi=torch.empty(0),
        wsi_mask=torch.empty(0),
        clinical=torch.empty(0),
        time=cat("time"),
        event=cat("event"),
        endpoint_observed=cat("endpoint_observed"),
        modality_present=cat("modality_present"),
    )


def round_epochs(cfg: TrainConfig, loader: DataLoader) -> int:
    """Epochs of a federation round: epochs_per_round, or more when they make fewer than
    cfg.min_steps_per_round optimiser steps over `loader` (the training split)."""
    steps = math.ceil(len(loader) / _micro_batches_per_step(cfg, loader))
    return max(cfg.epochs_per_round, math.ceil(cfg.min_steps_per_round / max(steps, 1)))


def _set_epoch(loader: DataLoader, epoch: int, seed: int) -> None:
    # SiteDataset draws its augmentation from (seed, epoch, patient); the shuffle order is reseeded
    # per epoch too, so a run resumed from a checkpoint sees the batches an unbroken run would.
    if hasattr(loader.dataset, "set_epoch"):
        loader.dataset.set_epoch(epoch)
    if loader.generator is not None:
        loader.generator.manual_seed(seed * 1_000_003 + epoch)


def train_local(
    model: nn.Module,
    train_loader: DataLoader,
    val_loader: DataLoader | None,
    cfg: TrainConfig,
    global_state: Mapping[str, torch.Tensor] | None = None,
    blend_weights: Mapping[str, float] | None = None,
    *,
    epochs: int | None = None,
    blend: BlendState | None = None,
    train_eval_loader: DataLoader | None = None,
    keep_best: bool = True,
    checkpoint_dir: str | Path | None = None,
    show_progress: bool = True,
    privacy: DpSgd | None = None,
    window: ScheduleWindow | None = None,
) -> LocalTrainResult:
    """Train `model` in place for `epochs` (default cfg.epochs) and return the selected weights.

    global_state anchors the FedProx term (cfg.prox_mu > 0); blend_weights: fixed head weights
    (None: a local BlendState, or `blend` to continue one); train_eval_loader: the unaugmented
    training split for the blending checkpoints (module docstring); checkpoint_dir: `last.pt` every
    epoch (resumed from), `best.pt`, `training.png`; privacy: DP-SGD with Poisson-sampled batches
    (result.dp_steps, .dp_sample_rate); window: this call's stretch of the recipe's rate schedule
    (None: the schedule spans exactly these epochs)."""
    epochs = epochs or cfg.epochs
    torch.manual_seed(cfg.seed)
    state = _blend_state(tuple(model.head_names), cfg, blend_weights, blend)
    blending = blend_weights is None and cfg.blend_mode != "off" and val_loader is not None

    if privacy is not None and cfg.risk_set != "batch":
        raise ValueError(f"DP-SGD needs risk_set: batch (the Poisson-sampled batch), not {cfg.risk_set!r}")
    per_step = _micro_batches_per_step(cfg, train_loader)
    sample_rate = DpSgd.sample_rate(len(train_loader.dataset), train_loader.batch_size)
    steps_per_epoch = DpSgd.steps_per_epoch(sample_rate) if privacy else math.ceil(len(train_loader) / per_step)
    stepper = _Stepper.on_window(model, cfg, window, epochs, steps_per_epoch, global_state)
    hooked = stepper.make_private(privacy, train_loader.batch_size) if privacy else None
    dp_generator = torch.Generator().manual_seed(privacy.seed) if privacy else None
    ckpt_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
    first_epoch, state, best, history = _resume(ckpt_dir, model, stepper, state)
    if blending and train_eval_loader is not None and first_epoch == 1 and state.last is None:
        state.update(0, _checkpoint(model, train_eval_loader, val_loader, cfg.ties))

    train_stats = val_stats = None
    for epoch in range(first_epoch, epochs + 1):
        _set_epoch(train_loader, epoch, cfg.seed)
        chunks = _epoch_chunks(train_loader, per_step, privacy and (sample_rate, steps_per_epoch, dp_generator))
        record, train_stats = _train_epoch(
            model, progress_bar(chunks, f"epoch {epoch}/{epochs}", steps_per_epoch, show_progress), stepper, state, cfg, epoch
        )
        if val_loader is not None:
            val_stats = evaluate(model, val_loader, cfg.ties).stats
            record["val"] = val_stats.mean_losses()
            if blending and epoch % cfg.blend_interval == 0:
                _blend_checkpoint(model, state, record, train_eval_loader, cfg)
            if keep_best and record["val"][FUSED] < best["loss"]:
                best = {"loss": record["val"][FUSED], "epoch": epoch, "state": copy.deepcopy(model.state_dict())}
        history.append(record)
        if ckpt_dir is not None:
            _save(ckpt_dir, epoch, model, stepper, state, best, history)

    if hooked is not None:
        hooked._close()  # removes the per-patient gradient hooks; `model` is the plain network again
    if ckpt_dir is not None and history:
        save_training_plot(state, history, ckpt_dir / "training.png")
    if best["state"] is not None:
        model.load_state_dict(best["state"])
    return LocalTrainResult(
        state={k: v.detach().clone() for k, v in model.state_dict().items()},
        train_stats=train_stats,
        val_stats=val_stats,
        n_examples=len(train_loader.dataset),
        n_events=tuple(train_stats.events[FUSED]) if train_stats is not None else (),
        best_epoch=best["epoch"] or epochs,
        blend=state,
        history=history,
        dp_steps=(epochs - first_epoch + 1) * steps_per_epoch if privacy else 0,
        dp_sample_rate=sample_rate if privacy else 0.0,
    )


def _epoch_chunks(loader: DataLoader, per_step: int, poisson: tuple | None) -> Iterable[list[SurvivalBatch]]:
    """The epoch's chunks (one optimiser step each): DP-SGD's Poisson-sampled batches when `poisson`
    = (sample rate, steps, generator), else `per_step` forward batches at a time."""
    if poisson:
        return poisson_batches(loader.dataset, loader.collate_fn, *poisson)
    return _chunks(loader, per_step)


def _train_epoch(
    model: nn.Module, chunks: Iterable[list[SurvivalBatch]], stepper: _Stepper, state: BlendState, cfg: TrainConfig, epoch: int
) -> tuple[dict, HeadLossStats]:
    """One optimiser step per chunk; the epoch's record (mean loss, rate, weights, per-head running
    training losses) and its pooled training statistics."""
    model.train()
    seen = _Labels()
    losses = [_train_chunk(chunk, stepper, state.weights, cfg, seen) for chunk in chunks]
    train_stats = seen.stats(cfg.ties)
    record = {
        "epoch": epoch,
        "loss": float(np.nanmean(losses)),
        "lr": stepper.rate,
        "weights": dict(state.weights),
        "train": train_stats.mean_losses(),
    }
    return record, train_stats


def _blend_state(
    heads: tuple[str, ...], cfg: TrainConfig, fixed: Mapping[str, float] | None, blend: BlendState | None
) -> BlendState:
    """Fixed head weights (a federation server's), the state to continue, or a fresh one of the recipe."""
    if fixed is None:
        return blend or BlendState.for_recipe(heads, cfg)
    missing = set(heads) - set(fixed)
    if missing:
        raise ValueError(f"blend_weights lacks heads {sorted(missing)}")
    return BlendState(heads=heads, mode="off", weights=dict(fixed))


def _blend_checkpoint(
    model: nn.Module, state: BlendState, record: dict, train_eval_loader: DataLoader | None, cfg: TrainConfig
) -> None:
    """Update the blend weights from this epoch's losses (the unaugmented training split in eval
    mode when `train_eval_loader` is given, else the epoch's running losses)."""
    if train_eval_loader is not None:
        record["train_eval"] = evaluate(model, train_eval_loader, cfg.ties).stats.mean_losses()
    state.update(record["epoch"], Checkpoint(train=record.get("train_eval", record["train"]), val=record["val"]))


def _checkpoint(model: nn.Module, train_loader: DataLoader, val_loader: DataLoader, ties: Ties) -> Checkpoint:
    """Per-head mean losses of the current model on both splits, in eval mode."""
    return Checkpoint(
        train=evaluate(model, train_loader, ties).stats.mean_losses(), val=evaluate(model, val_loader, ties).stats.mean_losses()
    )


def _save(directory: Path, epoch: int, model: nn.Module, stepper: _Stepper, blend: BlendState, best: dict, history: list) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    payload = {
        "epoch": epoch,
        "model": model.state_dict(),
        "optimizer": stepper.optimizer.state_dict(),
        "step": stepper.step_index,
        "scaler": stepper.scaler.state_dict(),
        "rng": torch.get_rng_state(),
        "blend": blend.to_dict(),
        "best": {"loss": best["loss"], "epoch": best["epoch"]},
        "history": history,
    }
    with atomic_path(directory / "last.pt") as tmp:  # a crash never leaves half a checkpoint
        torch.save(payload, tmp)
    if best["state"] is not None and best["epoch"] == epoch:
        torch.save({"epoch": epoch, "model": best["state"], "val_fused_loss": best["loss"]}, directory / "best.pt")


def _resume(directory: Path | None, model: nn.Module, stepper: _Stepper, blend: BlendState):
    """(first epoch, blend state, best, history): from `directory`/last.pt when there is one, else a fresh start."""
    path = directory / "last.pt" if directory is not None else None
    if path is None or not path.is_file():
        return 1, blend, {"loss": math.inf, "epoch": 0, "state": None}, []
    payload = torch.load(path, map_location=stepper.device, weights_only=False)
    model.load_state_dict(payload["model"])
    stepper.optimizer.load_state_dict(payload["optimizer"])
    stepper.step_index = payload["step"]
    stepper._set_rate()
    stepper.scaler.load_state_dict(payload["scaler"])
    torch.set_rng_state(payload["rng"])
    best = dict(payload["best"], state=None)
    best_file = path.parent / "best.pt"
    if best["epoch"] and best_file.is_file():
        best["state"] = torch.load(best_file, map_location=stepper.device, weights_only=True)["model"]
    return payload["epoch"] + 1, BlendState.from_dict(payload["blend"]), best, payload["history"]
