"""PNG plots of a run: a metric per round, federated against the local-only and centralized baselines."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["plot_metric"]


def plot_metric(
    path: Path,
    *,
    metric: str,
    rounds: Sequence[int],
    series: Mapping[str, Sequence[float]],
    title: str,
) -> Path:
    """Draw one line per named series (x = round) and write ``path``; returns it."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    styles = {"federated": "-", "centralized": "--", "local-only": ":"}
    for label, values in series.items():
        if not values:
            continue
        xs = list(rounds)[: len(values)]
        ax.plot(xs, list(values)[: len(xs)], styles.get(label, "-."), label=label, linewidth=2)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("round")
    ax.set_ylabel(metric)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
