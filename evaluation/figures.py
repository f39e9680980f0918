"""Writing the evaluation reports' figures."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def save_figure(fig: Any, out: Path, name: str) -> str:
    """Lay out, write as PNG (110 dpi) into `out` and close a matplotlib figure; returns the file name."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(out / name, dpi=110)
    plt.close(fig)
    return name
