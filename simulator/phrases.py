"""Chat message text built from phrase lists according to a polarity."""

from __future__ import annotations

import numpy as np

POSITIVE = (
    "I love this",
    "great quality",
    "works perfectly",
    "fast delivery, thank you",
    "really happy with my order",
    "excellent service",
    "this is exactly what I wanted",
    "amazing price",
    "super helpful support",
    "would definitely buy again",
)
NEGATIVE = (
    "this is terrible",
    "my order arrived broken",
    "very disappointed",
    "the item never arrived",
    "worst service ever",
    "I want a refund",
    "way too expensive",
    "support was useless",
    "really poor quality",
    "I am thinking of closing my account",
)
NEUTRAL = (
    "I have a question about my order",
    "where can I find the size chart",
    "do you ship abroad",
    "can I change my delivery address",
    "what are your opening hours",
    "is this available in another colour",
    "how do I track a package",
    "I placed an order yesterday",
)


def chat_text(polarity: str, rng: np.random.Generator) -> str:
    """Compose a message: one or two phrases of `polarity` ("positive"/"negative"), maybe a neutral one."""
    polar = POSITIVE if polarity == "positive" else NEGATIVE
    parts = [polar[i] for i in rng.choice(len(polar), size=int(rng.integers(1, 3)), replace=False)]
    if rng.random() < 0.5:
        parts.insert(int(rng.integers(0, len(parts) + 1)), NEUTRAL[int(rng.integers(len(NEUTRAL)))])
    return ". ".join(parts) + "."
