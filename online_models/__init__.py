"""Pulse's online models: River estimators with exact per-feature explanations.

Pure model math: no stream runtime, broker or store inside.
"""

from online_models.bandit import EpsilonGreedyBandit, ips, snips
from online_models.churn import ChurnClassifier
from online_models.drift import DriftAdaptive, DriftDetector
from online_models.explanation import Explanation, linear_explanation
from online_models.next_best_action import ACTIONS, Action, RuleBasedPolicy
from online_models.recommender import HybridRecommender, Recommendation
from online_models.segments import BehaviourSegmenter
from online_models.selection import ModelSelector
from online_models.sentiment import SentimentClassifier

__all__ = [
    "ACTIONS",
    "Action",
    "ChurnClassifier",
    "Explanation",
    "HybridRecommender",
    "Recommendation",
    "RuleBasedPolicy",
    "SentimentClassifier",
    "linear_explanation",
    "BehaviourSegmenter",
    "DriftAdaptive",
    "DriftDetector",
    "EpsilonGreedyBandit",
    "ModelSelector",
    "ips",
    "snips",
]
