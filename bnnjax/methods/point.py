"""A point estimate of the weights: maximum likelihood, the deterministic baseline.

    loss = − mean_i log softmax(f(x_i; w))[y_i]                  (a classifier)
    loss = − mean_i log N(y_i; mean(x_i; w), std(x_i; w)²)       (a regressor)

Its predictive is a single draw (K = 1): the softmax of the network's logits, or one Gaussian.
A regressor's `likelihood` (bnnjax.likelihoods) is "gaussian", std = `noise_std` fixed, or
"heteroscedastic", the network's second output giving std(x): its predictive std is then all
aleatoric (one draw has no epistemic part).

With `prior_workdir` naming a saved diagonal Gaussian N(μ, σ²) over the same weights (a previous
task's Laplace posterior: elastic weight consolidation, Kirkpatrick et al. 2017), the loss is the
MAP objective under that prior, per example and weighted by λ = `ewc_lambda`:

    loss = − mean_i log p(y_i | x_i, w) + λ Σ_j (w_j − μ_j)² / (2 σ_j² N)
"""

from typing import Any, Callable, Optional

import haiku as hk
import jax
import jax.numpy as jnp

from bnnjax import likelihoods, objectives, posterior as post
from bnnjax.distributions import categorical_log_prob
from bnnjax.methods.common import init_from_weights, network_shapes, targets, weights_from
from bnnjax.task import CLASSIFIER, REGRESSOR, DataInfo, Method, Predictor, Task


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


def penalised(nll, params, prior, weight: float, num_train: int):
  """(loss, metrics): the NLL, plus `gaussian_penalty` when there is a prior (EWC, a MAP prior)."""
  if prior is None:
    return nll, {"nll": nll}
  penalty = gaussian_penalty(params, prior, weight, num_train)
  return nll + penalty, {"nll": nll, "penalty": penalty}


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
    return penalised(nll, params, prior, prior_weight, info.num_train)

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


def regression_task(
  forward: Callable,
  info: DataInfo,
  likelihood: str = likelihoods.GAUSSIAN,
  noise_std: float = 1.0,
  initial_params: Optional[Any] = None,
  prior: Optional[Any] = None,
  prior_weight: float = 1.0,
) -> Task:
  """A MAP regressor Task of the Haiku function `forward(x) -> outputs [B, 1 or 2]`.

  Args:
    forward: called inside hk.transform with x [B, *info.input_shape]; [B, 1] outputs (the mean)
      for likelihood "gaussian", [B, 2] (mean, s) for "heteroscedastic" (bnnjax.likelihoods).
    info: the data; needs num_classes = 0.
    likelihood, noise_std: the Gaussian's std is noise_std (fixed), or std(x) from the outputs.
    initial_params, prior, prior_weight: as make_task.
  Returns:
    Task(init, loss, evaluate, predictor); predictor.sample gives (means [1, B], stds [1, B]).
  """
  likelihoods.check(likelihood, info)
  if not noise_std > 0:
    raise ValueError(f"config.model.noise_std must be positive, got {noise_std!r}")
  net = hk.without_apply_rng(hk.transform(forward))
  from bnnjax.methods.mean_field import regression_metrics  # pylint: disable=import-outside-toplevel

  def init(rng, batch):
    return net.init(rng, batch["x"]) if initial_params is None else initial_params

  def mean_and_std(params, x):  # ([1, B], [1, B]): the predictive of one draw
    return likelihoods.mean_and_std(net.apply(params, x)[None], likelihood, noise_std)

  def loss(params, rng, batch, step):
    del rng, step
    mean, std = mean_and_std(params, batch["x"])
    nll = objectives.gaussian_nll(mean, targets(batch), std)
    return penalised(nll, params, prior, prior_weight, info.num_train)

  def evaluate(params, rng, batch):
    del rng
    mean, std = mean_and_std(params, batch["x"])
    return regression_metrics(mean, targets(batch), std)

  def sample(params, rng, x, num_samples):
    del rng, num_samples  # a point estimate is a predictive with one sample
    return mean_and_std(params, x)

  return Task(init, loss, evaluate, predictor=Predictor(REGRESSOR, sample))


DEFAULTS = dict(
  init_from="", prior_workdir="", ewc_lambda=1.0, noise_std=1.0, likelihood=likelihoods.GAUSSIAN
)


def method_task(forward: Callable, m, info: DataInfo, restored) -> Task:
  """The point estimate as a Method; m.init_from (restored["init_from"]) starts it from a
  trained run of the same network (its posterior means if that run was Bayesian);
  m.prior_workdir (restored["prior_workdir"]) names a diagonal Gaussian penalising the weights.
  A regression data set (num_classes = 0) makes a regressor of m.likelihood and m.noise_std."""
  if not (m.ewc_lambda >= 0 and m.ewc_lambda < float("inf")):
    raise ValueError(f"config.model.ewc_lambda must be >= 0 and finite, got {m.ewc_lambda!r}")
  likelihoods.check(m.likelihood, info)
  initial = init_from_weights(forward, m, info, restored)
  prior = None
  if m.prior_workdir:
    prior = restored["prior_workdir"]
    where = f"config.model.prior_workdir={m.prior_workdir!r}"
    if not post.is_posterior(prior):
      raise ValueError(f"{where} holds no diagonal Gaussian (no 'mean' and 'rho' or 'log_std' params)")
    weights_from(prior["mean"], network_shapes(forward, info), where)  # the same network, or one line
    prior = jax.tree_util.tree_map(jnp.asarray, prior)
  if info.num_classes == 0:
    return regression_task(
      forward, info, m.likelihood, float(m.noise_std), initial, prior, float(m.ewc_lambda)
    )
  return make_task(forward, info, initial, prior, float(m.ewc_lambda))


METHOD = Method(
  name="point",
  default_config=lambda: dict(DEFAULTS),
  make_task=method_task,
  workdir_fields=("init_from", "prior_workdir"),
  num_outputs=likelihoods.method_outputs,
)
