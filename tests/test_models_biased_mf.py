"""InPlaceBiasedMF learns exactly as River's BiasedMF does."""

from __future__ import annotations

import pickle
import random

import numpy as np
import pytest
from river import optim, reco

from online_models.biased_mf import InPlaceBiasedMF


@pytest.mark.parametrize("l2", [0.0, 0.01])
def test_same_state_as_river_bit_for_bit(l2: float) -> None:
    ours = InPlaceBiasedMF(n_factors=8, learning_rate=0.05, seed=3, l2_bias=l2, l2_latent=l2)
    river = reco.BiasedMF(n_factors=8, bias_optimizer=optim.SGD(0.05), latent_optimizer=optim.SGD(0.05), seed=3,
                          l2_bias=l2, l2_latent=l2)
    rng = random.Random(0)
    for _ in range(3000):
        user, item, y = f"u{rng.randrange(50)}", f"i{rng.randrange(200)}", rng.choice([0.0, 1.0, 2.0, 5.0])
        assert ours.predict_one(user, item) == river.predict_one(user, item)
        ours.learn_one(user, item, y)
        river.learn_one(user, item, y)
    assert ours.global_mean.get() == river.global_mean.get()
    for mine, theirs in ((ours.u_biases, river.u_biases), (ours.i_biases, river.i_biases)):
        assert list(mine) == list(theirs) and all(mine[k] == theirs[k] for k in theirs)
    for mine, theirs in ((ours.u_latents, river.u_latents), (ours.i_latents, river.i_latents)):
        assert list(mine) == list(theirs)
        for key in theirs:
            np.testing.assert_array_equal(mine[key], theirs[key])
    for name in ("u_bias_optimizer", "i_bias_optimizer", "u_latent_optimizer", "i_latent_optimizer"):
        assert getattr(ours, name).n_iterations == getattr(river, name).n_iterations == 3000


def test_pickles_and_keeps_learning() -> None:
    mf = InPlaceBiasedMF(n_factors=4, learning_rate=0.05, seed=1)
    mf.learn_one("ann", "tent", 1.0)
    clone = pickle.loads(pickle.dumps(mf))
    mf.learn_one("ann", "kayak", 2.0)
    clone.learn_one("ann", "kayak", 2.0)
    assert clone.predict_one("ann", "kayak") == mf.predict_one("ann", "kayak")

