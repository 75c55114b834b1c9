"""Pictures of a local training run: the blend weights over epochs (as the MMNN paper's Fig. 1)
and the per-head training / validation losses."""

from __future__ import annotations

from pathlib import Path

from stsfl.common.blending import BlendState
from stsfl.common.figures import pyplot, save_png


def save_training_plot(blend: BlendState, history: list[dict], path: str | Path) -> Path:
    """Two panels: blend weight per head (step function of the update epochs) and losses per head."""
    fig, (left, right) = pyplot().subplots(1, 2, figsize=(10, 3.8))
    last_epoch = max([h["epoch"] for h in history] + [e for e, _ in blend.history] + [1])
    for head in blend.heads:
        epochs = [e for e, _ in blend.history] + [last_epoch]
        weights = [w[head] for _, w in blend.history] + [blend.history[-1][1][head]]
        left.step(epochs, weights, where="post", label=head)
        line = right.plot([h["epoch"] for h in history], [h["train"][head] for h in history], label=f"{head} train")[0]
        if history and "val" in history[0]:
            right.plot(
                [h["epoch"] for h in history],
                [h["val"][head] for h in history],
                "--",
                color=line.get_color(),
                label=f"{head} val",
            )
    left.set(xlabel="epoch", ylabel="blend weight", title=f"gradient blending ({blend.mode})", ylim=(-0.02, 1.02))
    right.set(xlabel="epoch", ylabel="Cox loss (mean over events, summed over endpoints)", title="losses per head")
    left.legend(fontsize=8)
    right.legend(fontsize=7, ncol=2)
    return save_png(fig, path)
