"""`pulse evaluate --dataset cdnow`: the label protocol, and the whole harness on a small made-up CDNOW file."""

from __future__ import annotations

import argparse
import datetime
import json
import random
from pathlib import Path

import numpy as np
import pytest

from evaluation.datasets.cdnow import SOURCE, Purchase, churn_events, read_purchases
from evaluation.datasets.cdnow_report import same_day_auc
from evaluation.metrics import roc_auc

DAY0 = datetime.date(1997, 1, 1).toordinal()


def test_labels_follow_the_protocol() -> None:
    purchases = [Purchase("a", DAY0, 10.0, 1), Purchase("a", DAY0 + 90, 10.0, 1),  # back on day 90: not churned
                 Purchase("a", DAY0 + 181, 10.0, 1),  # 91 days later: churned at day 90 + 91, before this purchase
                 Purchase("b", DAY0 + 5, 10.0, 1), Purchase("z", DAY0 + 200, 1.0, 1)]  # z: the data's last day
    events = churn_events(purchases, horizon_days=90)
    labels = [(e["user_id"], e["purchase_day"] - DAY0, e["ts"] // 86_400_000 - (DAY0 - 719163), e["churned"])
              for e in events if e["type"] == "churn_outcome"]
    assert labels == [("cdnow-a", 0, 90, False), ("cdnow-b", 5, 96, True), ("cdnow-a", 90, 181, True)]
    a = [e["type"] for e in events if e["user_id"] == "cdnow-a"]
    assert a == ["purchase", "churn_outcome", "purchase", "churn_outcome", "purchase"], \
        "labels before same-day purchases"
    assert [e["ts"] for e in events] == sorted(e["ts"] for e in events)


def test_labels_whose_horizon_passes_the_end_are_learned_but_not_scored() -> None:
    from evaluation.datasets.cdnow import replay
    from pulse.config import Settings

    # b's purchase on day 150 has 90 days only up to day 240 > 200 (the data's end): only a return can be known
    purchases = [Purchase("a", DAY0, 10.0, 1), Purchase("a", DAY0 + 20, 10.0, 1), Purchase("b", DAY0 + 150, 10.0, 1),
                 Purchase("b", DAY0 + 160, 10.0, 1), Purchase("z", DAY0 + 200, 1.0, 1)]
    run = replay(churn_events(purchases, horizon_days=90), 90, Settings.from_env(), progress=False)
    # labels: a@0 (returned on day 20), a@20 (churned, day 111), b@150 (returned on day 160: sent, not scored)
    assert run.labels == 3 and run.unscored == 1
    assert run.purchase_days == [DAY0, DAY0 + 20] and run.churned == [False, True]
    assert len(run.scores["Pulse (served probability)"]) == len(run.scores["frequency (purchases, negated)"]) == 2


def test_rows_of_one_customer_and_day_are_one_purchase(tmp_path: Path) -> None:
    path = tmp_path / "cdnow.txt"
    path.write_text(" customer_id  date number_of_cds  dollar_value\n 00001 19970101  1   11.77\n"
                    " 00001 19970101  2   20.00\n 00001 19970105  1    0.00\n")
    assert read_purchases(path) == [Purchase("00001", DAY0, 31.77, 3), Purchase("00001", DAY0 + 4, 0.0, 1)]
    assert len(read_purchases(path, limit=2)) == 1


def test_same_day_auc_matches_auc_per_day() -> None:
    rng = np.random.default_rng(3)
    y, scores, days = rng.random(500) < 0.4, rng.random(500).round(2), rng.integers(0, 20, 500)
    per_day = [(roc_auc(y[days == d], scores[days == d]), (days == d).sum()) for d in np.unique(days)]
    expected = sum(a * n for a, n in per_day) / sum(n for _, n in per_day)
    assert same_day_auc(y, scores, days)(np.ones(500)) == pytest.approx(expected)


def made_up_cdnow(path: Path, customers: int = 300, seed: int = 5) -> None:
    """Customers who buy at their own pace until they stop, over 1997-98 (the real file's layout)."""
    rng = random.Random(seed)
    rows = [" customer_id  date number_of_cds  dollar_value"]
    for c in range(customers):
        day, gap, stays = DAY0 + rng.randrange(90), rng.uniform(10, 120), rng.uniform(0.5, 0.95)
        while day < DAY0 + 545:
            date = datetime.date.fromordinal(day).strftime("%Y%m%d")
            rows.append(f" {c:05d} {date}  {rng.randint(1, 4)}   {rng.uniform(5, 80):.2f}")
            if rng.random() > stays:
                break
            day += 1 + int(rng.expovariate(1 / gap))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(rows) + "\n")


def test_the_harness_replays_a_cdnow_file_through_the_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from evaluation.datasets.cdnow import evaluate

    monkeypatch.setenv("PULSE_DATA_DIR", str(tmp_path / "cache"))
    made_up_cdnow(tmp_path / "cache" / SOURCE.cached_name)  # already in the cache: nothing is downloaded
    out = tmp_path / "report"
    args = argparse.Namespace(horizon_days=60, bootstrap=30, limit=None, seed=7, out=str(out), no_progress=True)
    assert evaluate(args) == 0
    summary = json.loads((out / "report.json").read_text())
    assert summary["labels"] > 300 and 0.1 < summary["churned_share"] < 0.9
    assert summary["labels_on_served_features"] == summary["labels_sent"], "every label learned on the served features"
    assert summary["labels_unscored"] > 0 and summary["labels_sent"] == summary["labels"] + summary["labels_unscored"]
    assert summary["events_meeting_long_term_record"] > 0, "labels and returns met idle customers' records"
    methods = summary["methods"]
    assert set(methods) >= {"Pulse (served probability)", "RFM logistic", "frequency (purchases, negated)"}
    point, low, high = methods["Pulse (served probability)"]["auc_all"]
    assert 0.0 <= low <= point <= high <= 1.0
    assert "log_loss_all" not in methods["frequency (purchases, negated)"]
    assert summary["acceptance"]["cells"] == 6 and summary["strongest"]["cells"] == 6
    assert summary["strongest"]["by_cell"]["auc_all"]["better_baseline"] == "frequency (purchases, negated)"
    assert 0.0 <= methods["frequency (purchases, negated)"]["purchase_day_auc_all"][0] <= 1.0
    assert set(summary["pulse_minus"]) == {"frequency (purchases, negated)", "RFM logistic, log scale, at the horizon"}
    report = (out / "report.md").read_text()
    assert "same-day AUC" in report and "purchase-day AUC" in report
    assert (out / "auc_by_month.png").exists() and (out / "calibration.png").exists()
