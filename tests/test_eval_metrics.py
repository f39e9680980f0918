"""Evaluation metrics on small hand-checkable streams."""

from __future__ import annotations

import math

import pytest

import evaluation.metrics as M


def test_hit_rate_and_ndcg_by_hand() -> None:
    ranked = [f"i{n}" for n in range(12)]
    assert M.hit_at_k(ranked, "i9") == 1.0 and M.hit_at_k(ranked, "i10") == 0.0
    assert M.ndcg_at_k(ranked, "i0") == 1.0
    assert M.ndcg_at_k(ranked, "i2") == pytest.approx(1 / math.log2(4))  # position 3
    assert M.ndcg_at_k(ranked, "i10") == 0.0
    # a stream of 4 lookups: hits at positions 1 and 2, two misses
    stream = [("i0",), ("i1",), ("x",), ("i11",)]
    hits = [M.hit_at_k(ranked, t) for (t,) in stream]
    ndcgs = [M.ndcg_at_k(ranked, t) for (t,) in stream]
    assert sum(hits) / 4 == 0.5
    assert sum(ndcgs) / 4 == pytest.approx((1 + 1 / math.log2(3)) / 4)


def test_coverage_and_diversity_by_hand() -> None:
    assert M.catalog_coverage([["a", "b"], ["a"], []], catalog_size=5) == 0.4
    assert M.intra_list_diversity(["x", "y", "z"]) == 1.0
    assert M.intra_list_diversity(["x", "x", "x", "x"]) == 0.0
    # pairs: (x,x) same, (x,y) x2 differ -> 2 of 3 pairs differ
    assert M.intra_list_diversity(["x", "x", "y"]) == pytest.approx(2 / 3)


def test_roc_auc_exact_with_ties() -> None:
    # positives 0.8, 0.4; negatives 0.4, 0.1 -> pairs: (0.8>0.4) 1, (0.8>0.1) 1, (0.4=0.4) 0.5, (0.4>0.1) 1 -> 3.5/4
    assert M.roc_auc([True, True, False, False], [0.8, 0.4, 0.4, 0.1]) == 0.875
    assert M.roc_auc([True, False], [0.1, 0.9]) == 0.0
    assert math.isnan(M.roc_auc([True, True], [0.1, 0.9]))


def test_classification_report_by_hand() -> None:
    report = M.classification_report([True, False], [0.8, 0.4])
    assert report["roc_auc"] == 1.0
    assert report["log_loss"] == pytest.approx(-(math.log(0.8) + math.log(0.6)) / 2)
    assert report["f1"] == 1.0
    assert M.classification_report([True, False, True], [0.4, 0.6, 0.9])["f1"] == pytest.approx(0.5)  # tp1 fp1 fn1


def test_sentiment_report_by_hand() -> None:
    report = M.sentiment_report(["positive", "negative", "negative", "positive"],
                                ["positive", "negative", "positive", "positive"])
    assert report["accuracy"] == 0.75
    # F1 positive: p=2/3 r=1 -> 0.8; F1 negative: p=1 r=1/2 -> 2/3
    assert report["macro_f1"] == pytest.approx((0.8 + 2 / 3) / 2)


def test_mean_ci_and_bootstrap_lift() -> None:
    mean, low, high = M.mean_ci([0.0, 1.0, 0.0, 1.0])
    half = 1.959963984540054 * math.sqrt(1 / 3) / 2
    assert (mean, low, high) == pytest.approx((0.5, 0.5 - half, 0.5 + half))
    lift, lo, hi = M.bootstrap_lift([1.0, 0.0] * 200, [0.5, 0.0] * 200, seed=1)
    assert lift == pytest.approx(1.0) and lo < 1.0 < hi and lo > 0.3

