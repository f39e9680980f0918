import json

import pytest

import online_models
from online_models import Explanation, linear_explanation


def test_score_is_intercept_plus_contributions():
    e = Explanation(intercept=-0.25, contributions={"a": 1.5, "b": -0.5, "c": 0.0})
    assert e.score == pytest.approx(0.75, abs=1e-12)


def test_top_orders_by_absolute_value_then_name():
    e = Explanation(intercept=0.0, contributions={"a": 0.1, "b": -3.0, "c": 2.0, "d": -2.0})
    assert e.top(3) == [("b", -3.0), ("c", 2.0), ("d", -2.0)]
    assert e.top(10) == e.top(4)
    assert e.top(0) == []


def test_to_dict_is_plain_json():
    import numpy as np

    e = linear_explanation({"a": np.float64(2.0)}, {"a": np.float64(0.5), "b": 1}, intercept=np.float64(0.25))
    d = e.to_dict()
    assert d == {"intercept": 0.25, "contributions": {"a": 1.0, "b": 0.0}, "score": 1.25}
    assert all(type(v) is float for v in d["contributions"].values())
    assert json.loads(json.dumps(d)) == d


def test_linear_explanation_covers_every_feature_of_x():
    e = linear_explanation({"a": 2.0, "unused": 9.0}, {"a": 3.0, "b": 4.0}, intercept=1.0)
    assert e.contributions == {"a": 6.0, "b": 0.0}
    assert e.score == 7.0


def test_package_reexports_public_api():
    for name in online_models.__all__:
        assert hasattr(online_models, name)
