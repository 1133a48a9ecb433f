"""A point estimate of the weights: maximum likelihood, the deterministic baseline.

    loss = − mean_i log softmax(f(x_i; w))[y_i]

Its predictive is a single draw (K = 1): the softmax of the network's logits.

With `prior_workdir` naming a saved diagonal Gaussian N(μ, σ²) over the same weights (a previous
task's Laplace posterior: elastic weight consolidation, Kirkpatrick et al. 2017), the loss is the
MAP objective under that prior, per example and weighted by λ = `ewc_lambda`:

    loss = − mean_i log p(y_i | x_i, w) + λ Σ_j (w_j − μ_j)² / (2 σ_j² N)
"""

from typing import Any, Callable, Optional

import haiku as hk
import jax
import jax.numpy as jnp

from bnnjax import posterior as post
from bnnjax.distributions import categorical_log_prob
from bnnjax.methods.common import init_from_weights, network_shapes, weights_from
from bnnjax.task import CLASSIFIER, DataInfo, Method, Predictor, Task


def gaussian_penalty(params, prior, weight: float, num_train: int) -> jax.Array:
  """weight · Σ_j (w_j − μ_j)² / (2 σ_j² N) for a diagonal Gaussian prior {"mean", scale} (a
  bnnjax posterior pytree over the same weights); its leaves without a scale are free."""
  stds = post.stds(prior)

  def matching(tree):  # the leaves that have a scale, in the scales' structure
    return {module: {name: tree[module][name] for name in leaves} for module, leaves in stds.items()}

  terms = jax.tree_util.tree_map(
    lambda w, m, s: jnp.sum(jnp.square((w - m) / s)), matching(params), matching(prior["mean"]), stds
  )
  return weight * 0.5 * sum(jax.tree_util.tree_leaves(terms)) / num_train


def make_task(
  forward: Callable,
  info: DataInfo,
  initial_params: Optional[Any] = None,
  prior: Optional[Any] = None,
  prior_weight: float = 1.0,
) -> Task:
  """A classifier Task of the Haiku function `forward(x) -> logits [B, C]`.

  Args:
    forward: called inside hk.transform with x [B, *info.input_shape].
    info: the data; needs num_classes >= 2.
    initial_params: params to start from (fine-tuning a trained run), or None for a fresh init.
    prior: None, or a diagonal Gaussian over the weights (a posterior pytree) whose
      `gaussian_penalty`, times prior_weight, is added to the loss.
  Returns:
    Task(init, loss, evaluate, predictor) whose params are the plain Haiku params.
  """
  if info.num_classes < 2:
    raise ValueError(
      f"a point-estimate classifier needs a classification data set "
      f"(>= 2 classes), got num_classes={info.num_classes}"
    )
  net = hk.without_apply_rng(hk.transform(forward))

  def init(rng, batch):
    return net.init(rng, batch["x"]) if initial_params is None else initial_params

  def loss(params, rng, batch, step):
    del rng, step
    nll = -jnp.mean(categorical_log_prob(net.apply(params, batch["x"]), batch["y"]))
    if prior is None:
      return nll, {"nll": nll}
    penalty = gaussian_penalty(params, prior, prior_weight, info.num_train)
    return nll + penalty, {"nll": nll, "penalty": penalty}

  def evaluate(params, rng, batch):
    del rng
    logits = net.apply(params, batch["x"])
    return {
      "accuracy": jnp.mean(jnp.argmax(logits, -1) == batch["y"]),
      "nll": -jnp.mean(categorical_log_prob(logits, batch["y"])),
    }

  def sample(params, rng, x, num_samples):
    del rng, num_samples  # a point estimate is a predictive with one sample
    return net.apply(params, x)[None]

  return Task(init, loss, evaluate, predictor=Predictor(CLASSIFIER, sample))


DEFAULTS = dict(init_from="", prior_workdir="", ewc_lambda=1.0)


def method_task(forward: Callable, m, info: DataInfo, restored) -> Task:
  """The point estimate as a Method; m.init_from (restored["init_from"]) starts it from a
  trained run of the same network (its posterior means if that run was Bayesian);
  m.prior_workdir (restored["prior_workdir"]) names a diagonal Gaussian penalising the weights."""
  if not (m.ewc_lambda >= 0 and m.ewc_lambda < float("inf")):
    raise ValueError(f"config.model.ewc_lambda must be >= 0 and finite, got {m.ewc_lambda!r}")
  initial = init_from_weights(forward, m, info, restored)
  prior = None
  if m.prior_workdir:
    prior = restored["prior_workdir"]
    where = f"config.model.prior_workdir={m.prior_workdir!r}"
    if not post.is_posterior(prior):
      raise ValueError(f"{where} holds no diagonal Gaussian (no 'mean' and 'rho' or 'log_std' params)")
    weights_from(prior["mean"], network_shapes(forward, info), where)  # the same network, or one line
    prior = jax.tree_util.tree_map(jnp.asarray, prior)
  return make_task(forward, info, initial, prior, float(m.ewc_lambda))


METHOD = Method(
  name="point",
  default_config=lambda: dict(DEFAULTS),
  make_task=method_task,
  workdir_fields=("init_from", "prior_workdir"),
)
