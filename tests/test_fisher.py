"""The diagonal Fisher: the GGN's diagonal for a classifier, Σ x² / σ² for a linear regressor."""

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from bnnjax import data
from bnnjax.methods import fisher, laplace
from bnnjax.models import mlp


def test_a_classifiers_fisher_diagonal_is_the_diagonal_of_its_last_layer_ggn():
  x = data.load("digits", "train")["x"][:37].reshape(37, -1)  # 37 rows: the last chunk is padded
  forward = lambda x: mlp.mlp((16,), 10)(x)  # noqa: E731
  params = hk.transform(forward).init(jax.random.PRNGKey(0), jnp.asarray(x[:1]))
  diag = fisher.diagonal_fisher(forward, params, x, classification=True, chunk_size=8)
  ggn = laplace.ggn(forward, params, x, classification=True)
  last = laplace.last_layer(forward)
  last.features.init(jax.random.PRNGKey(0), jnp.asarray(x[:1]))  # names the last layer
  flat, _ = ravel_pytree(diag[last.name()])  # ravel order: b, then w, as the GGN's
  np.testing.assert_allclose(flat, np.diag(np.asarray(ggn)), rtol=2e-4, atol=1e-7)
  assert all(float(jnp.min(leaf)) >= 0 for leaf in jax.tree_util.tree_leaves(diag))
  assert float(jnp.sum(diag["mlp/~/linear_0"]["w"])) > 0  # the hidden layer has its own


def test_a_linear_regressors_fisher_is_the_sum_of_squared_inputs_over_the_noise_variance():
  x = np.random.default_rng(0).normal(size=(21, 3)).astype(np.float32)
  forward = lambda x: hk.Linear(1)(x)  # noqa: E731
  params = hk.transform(forward).init(jax.random.PRNGKey(0), jnp.asarray(x[:1]))
  diag = fisher.diagonal_fisher(forward, params, x, classification=False, noise_std=0.5, chunk_size=4)
  np.testing.assert_allclose(diag["linear"]["w"][:, 0], (x**2).sum(0) / 0.25, rtol=1e-5)
  np.testing.assert_allclose(diag["linear"]["b"], [21 / 0.25], rtol=1e-6)
