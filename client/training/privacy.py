"""Differential privacy at a site: Opacus DP-SGD for the local trainer and the site's privacy ledger.

Mechanism (the sampled Gaussian mechanism Opacus accounts for): every local step draws each
training patient independently with probability q = batch_size / N (Poisson sampling; a step
with nobody drawn still adds noise), clips each patient's gradient contribution to
`max_grad_norm`, adds Gaussian noise of standard deviation noise_multiplier x max_grad_norm to
their sum and divides by the expected batch size. Steps per epoch: round(1 / q).

Accounting: one ledger per site and federation (JSON in the site's state folder): one entry
(noise multiplier, q, steps) per local training the site ran - rounds and cross-site fine-tuning
alike, a repeated round counted again - and epsilon at the site's delta from Opacus's RDP
accountant over all entries. A site refuses a training that would take epsilon past its budget.

Noise: the site YAML's `noise_multiplier`, or by default the smallest one with which the
federation's planned epochs (sent by the server) spend exactly the budget; computed at the first
training and kept in the ledger.

Cox caveat: the partial likelihood is not a sum of per-patient terms - a patient is also in the
risk sets of the batch's other patients. Opacus clips each patient's own contribution
(d loss / d eta_i) (d eta_i / d theta); the patient's effect through the others' risk-set
denominators is not clipped, so epsilon bounds the per-patient clipped contributions, not the
whole-loss sensitivity (docs/security.md, "Differential privacy").
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset

from stsfl.common.atomic_file import write_text_atomic


class PrivacyBudgetSpent(RuntimeError):
    """The site's privacy budget does not allow another local training."""


@dataclass(frozen=True)
class DpSgd:
    """DP-SGD settings of one local training."""

    noise_multiplier: float
    max_grad_norm: float
    seed: int = 0

    @staticmethod
    def sample_rate(n_patients: int, batch_size: int) -> float:
        return min(batch_size / max(n_patients, 1), 1.0)

    @staticmethod
    def steps_per_epoch(sample_rate: float) -> int:
        return max(round(1.0 / sample_rate), 1)


def check_dp_compatible(model: nn.Module) -> None:
    """Per-patient gradients need normalisation that does not mix patients."""
    batch_norms = [name for name, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if batch_norms:
        raise ValueError(
            f"privacy.dp needs a network without batch norm ({len(batch_norms)} batch-norm layers, e.g. {batch_norms[0]}): "
            "set `model_norm: group` (or instance) in the federation YAML"
        )


def attach_dp(model: nn.Module, optimizer: torch.optim.Optimizer, dp: DpSgd, expected_batch_size: int):
    """Per-patient gradient hooks on `model` and the DP optimizer around `optimizer`.
    Returns (grad_sample_module, dp_optimizer); call grad_sample_module._close() when done."""
    from opacus import GradSampleModule
    from opacus.optimizers import DPOptimizer

    check_dp_compatible(model)
    hooked = GradSampleModule(model, loss_reduction="mean")
    dp_optimizer = DPOptimizer(
        optimizer,
        noise_multiplier=dp.noise_multiplier,
        max_grad_norm=dp.max_grad_norm,
        expected_batch_size=expected_batch_size,
        loss_reduction="mean",
        generator=torch.Generator().manual_seed(dp.seed),
    )
    return hooked, dp_optimizer


def poisson_batches(
    dataset: Dataset, collate: Callable, sample_rate: float, steps: int, generator: torch.Generator
) -> Iterator[list]:
    """`steps` chunks of one Poisson-sampled batch each, or an empty chunk when nobody was drawn."""
    n = len(dataset)
    for _ in range(steps):
        drawn = torch.nonzero(torch.rand(n, generator=generator) < sample_rate).flatten().tolist()
        yield [collate([dataset[i] for i in drawn])] if drawn else []


class PrivacyLedger:
    """(noise multiplier, sample rate, steps) of every DP training of one site in one federation."""

    def __init__(self, path: Path, delta: float):
        self.path = Path(path)
        self.delta = delta
        payload = json.loads(self.path.read_text(encoding="utf-8")) if self.path.is_file() else {}
        self.noise_multiplier: float | None = payload.get("noise_multiplier")
        self.entries: list[dict] = payload.get("entries", [])

    @staticmethod
    def epsilon_of(entries: list[dict], delta: float) -> float:
        from opacus.accountants import RDPAccountant

        if not entries:
            return 0.0
        accountant = RDPAccountant()
        accountant.history = [(e["noise_multiplier"], e["sample_rate"], e["steps"]) for e in entries]
        return float(accountant.get_epsilon(delta))

    def epsilon(self) -> float:
        return self.epsilon_of(self.entries, self.delta)

    def calibrated_noise(self, budget: float, sample_rate: float, planned_steps: int) -> float:
        """The noise multiplier with which `planned_steps` steps spend `budget` (kept once computed)."""
        from opacus.accountants.utils import get_noise_multiplier

        if self.noise_multiplier is None:
            self.noise_multiplier = float(
                get_noise_multiplier(
                    target_epsilon=budget,
                    target_delta=self.delta,
                    sample_rate=sample_rate,
                    steps=planned_steps,
                )
            )
        return self.noise_multiplier

    def check(self, budget: float | None, noise_multiplier: float, sample_rate: float, steps: int) -> float:
        """Epsilon after the next training; raise PrivacyBudgetSpent if it would pass `budget`."""
        after = self.epsilon_of(self.entries + [self._entry(0, noise_multiplier, sample_rate, steps)], self.delta)
        # get_noise_multiplier lands within 1 % below its target; allow rounding, not a real overrun
        if budget is not None and after > budget * (1 + 1e-3):
            raise PrivacyBudgetSpent(
                f"privacy budget spent: epsilon {self.epsilon():.2f} of {budget:g} (delta {self.delta:g}) used "
                f"in {len(self.entries)} training(s); one more would reach {after:.2f}. This site stops training "
                "(it still evaluates)."
            )
        return after

    def record(self, server_round: int, noise_multiplier: float, sample_rate: float, steps: int) -> None:
        self.entries.append(self._entry(server_round, noise_multiplier, sample_rate, steps))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(
            self.path,
            json.dumps({"delta": self.delta, "noise_multiplier": self.noise_multiplier, "entries": self.entries}, indent=1),
        )

    @staticmethod
    def _entry(server_round: int, noise_multiplier: float, sample_rate: float, steps: int) -> dict:
        return {"round": server_round, "noise_multiplier": noise_multiplier, "sample_rate": sample_rate, "steps": steps}
