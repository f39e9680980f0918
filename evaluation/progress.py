"""The progress bar of long evaluation runs (tqdm, on stderr)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

T = TypeVar("T")

__all__ = ["progress_bar"]


def progress_bar(items: Iterable[T], show: bool, desc: str, *, total: int | None = None,
                 unit: str = "ev") -> Iterable[T]:
    """`items`, behind a progress bar when `show` (its length is `total`, or `len(items)` where it has one).

    >>> list(progress_bar([1, 2], show=False, desc="quiet"))
    [1, 2]
    """
    if not show:
        return items
    from tqdm import tqdm  # imported only when shown: `pulse --help` stays fast

    if total is None and hasattr(items, "__len__"):
        total = len(items)
    return tqdm(items, total=total, desc=desc, unit=unit, mininterval=0.5)
