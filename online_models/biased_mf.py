"""River's biased matrix factorization with a `learn_one` that updates the factors in place."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from river import optim, reco, utils

__all__ = ["InPlaceBiasedMF"]


class InPlaceBiasedMF(reco.BiasedMF):
    """`river.reco.BiasedMF` trained by SGD, with the same state and the same updates, about 3x cheaper to learn.

    River's `learn_one` wraps each of its four gradients in a dict and hands it to an optimizer;
    this one computes the same gradients in the same order and subtracts them in place, counting
    each optimizer's iterations as River does. Results are identical bit for bit (tested), so every
    River tool reading a `BiasedMF` (prediction, the user and item factor dicts) works unchanged.

    >>> mf = InPlaceBiasedMF(n_factors=4, learning_rate=0.05, seed=1)
    >>> mf.learn_one("ann", "tent", 1.0)
    >>> round(mf.predict_one("ann", "tent"), 4)
    1.0213
    """

    def __init__(self, n_factors: int, learning_rate: float, seed: int | None = None, **kwargs: Any) -> None:
        super().__init__(n_factors=n_factors, bias_optimizer=optim.SGD(learning_rate),
                         latent_optimizer=optim.SGD(learning_rate), seed=seed, **kwargs)

    def learn_one(self, user: Hashable, item: Hashable, y: float, x: dict | None = None) -> None:
        """Learn that `user` gave `item` the rating `y` (one SGD step on both biases and latents)."""
        self.global_mean.update(y)
        # The factor dicts create missing entries on first access: read them in River's order (same random draws).
        u_bias, i_bias = self.u_biases[user], self.i_biases[item]
        u_latent, i_latent = self.u_latents[user], self.i_latents[item]
        y_pred = self.global_mean.get() + u_bias + i_bias + float(u_latent.dot(i_latent))
        g_loss = utils.math.clamp(self.loss.gradient(y, y_pred), minimum=-self.clip_gradient,
                                  maximum=self.clip_gradient)
        u_latent_grad, i_latent_grad = g_loss * i_latent, g_loss * u_latent
        if self.l2_latent:  # (adding 0 * latent would change no value)
            u_latent_grad += self.l2_latent * u_latent
            i_latent_grad += self.l2_latent * i_latent
        self.u_biases[user] = u_bias - _rate(self.u_bias_optimizer) * (g_loss + self.l2_bias * u_bias)
        self.i_biases[item] = i_bias - _rate(self.i_bias_optimizer) * (g_loss + self.l2_bias * i_bias)
        u_latent -= _rate(self.u_latent_optimizer) * u_latent_grad
        i_latent -= _rate(self.i_latent_optimizer) * i_latent_grad


def _rate(optimizer: optim.base.Optimizer) -> float:
    """The optimizer's learning rate for this step, counting the step as `Optimizer.step` does."""
    rate = optimizer.learning_rate
    optimizer.n_iterations += 1
    return rate
