"""Champion/challenger selection by progressive validation."""

from __future__ import annotations

import pytest

from online_models.selection import ModelSelector


def test_promotes_the_better_challenger_with_evidence() -> None:
    selector = ModelSelector(["champ", "chall"], bigger_is_better=True, window=10, min_samples=10, margin=0.15)
    switches = [selector.observe(step, {"champ": 0.5, "chall": 0.5 if step < 20 else 1.0}) for step in range(40)]
    made = [s for s in switches if s is not None]
    assert len(made) == 1 and selector.champion == "chall"
    # last-10 mean of chall must exceed 0.5 * 1.15 = 0.575: step 20 gives 0.55, step 21 gives 0.6
    assert made[0].step == 21 and made[0].old_score == pytest.approx(0.5) and made[0].new_score == pytest.approx(0.6)
    assert made[0].to_dict()["from"] == "champ"


def test_no_switch_within_margin_or_before_min_samples() -> None:
    selector = ModelSelector(["a", "b"], bigger_is_better=False, window=50, min_samples=30, margin=0.1)
    for step in range(100):
        selector.observe(step, {"a": 1.0, "b": 0.95})
    assert selector.champion == "a" and not selector.switches
    early = ModelSelector(["a", "b"], bigger_is_better=False, window=50, min_samples=30)
    for step in range(29):
        early.observe(step, {"a": 1.0, "b": 0.0})
    assert early.champion == "a"

