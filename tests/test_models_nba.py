import pytest

from online_models import ACTIONS, Action, RuleBasedPolicy


@pytest.fixture
def policy():
    return RuleBasedPolicy(churn_threshold=0.6, escalation_threshold=-0.5)


def test_negative_sentiment_escalates_even_with_high_churn(policy):
    action = policy.decide(churn_probability=0.95, sentiment=-0.72)
    assert action == Action("escalate_to_agent", 1.0, "sentiment -0.72 <= -0.50: hand over to a human agent")


def test_threshold_is_inclusive_for_escalation(policy):
    assert policy.decide(0.0, -0.5).name == "escalate_to_agent"
    assert policy.decide(0.0, -0.49).name == "recommend"


def test_high_churn_gets_retention_offer(policy):
    assert policy.decide(0.6, None).name == "retention_offer"
    assert policy.decide(0.8, 0.2).name == "retention_offer"
    assert "0.80 >= 0.60" in policy.decide(0.8, 0.2).reason


def test_otherwise_recommend(policy):
    for churn, sentiment in [(0.59, None), (0.1, 0.9), (0.0, -0.4)]:
        action = policy.decide(churn, sentiment)
        assert action.name == "recommend"
        assert action.propensity == 1.0


def test_every_decision_is_a_known_action(policy):
    names = {policy.decide(c / 10, s / 10).name for c in range(11) for s in range(-10, 11)}
    assert names == set(ACTIONS)


def test_to_dict():
    assert RuleBasedPolicy().decide(0.9, None).to_dict() == {
        "name": "retention_offer",
        "propensity": 1.0,
        "reason": "churn probability 0.90 >= 0.60: make a retention offer",
    }


@pytest.mark.parametrize("churn, sentiment",
                         [(1.2, None), (-0.1, 0.0), (float("nan"), None), (0.5, 1.5), (0.5, float("nan"))])
def test_out_of_range_inputs_are_rejected(policy, churn, sentiment):
    with pytest.raises(ValueError):
        policy.decide(churn, sentiment)


@pytest.mark.parametrize("kwargs", [{"churn_threshold": 1.5}, {"escalation_threshold": -2.0}])
def test_bad_thresholds_are_rejected(kwargs):
    with pytest.raises(ValueError):
        RuleBasedPolicy(**kwargs)
