"""Last-layer Laplace (MacKay 1992; Daxberger et al. 2021) around a trained point estimate.

The weights θ of the network's last dense layer (the last `hk.Linear` called, whose output
must be the network's output) get a Gaussian posterior at the MAP θ*; the other weights stay
at the point estimate:

    Λ = Σ_i J_iᵀ H_i J_i + λ I,   q(θ) = N(θ*, Λ⁻¹)          (full GGN, P x P)
    J_i = ∂f(x_i)/∂θ [C, P],   H_i = diag(p_i) − p_i p_iᵀ (softmax) or I / noise_std²

The logits are linear in the last layer's weights, so the GGN is the exact Hessian of the NLL
in θ and the linearised (GLM) predictive, f(x) ~ N(f*(x), J Σ Jᵀ), is what drawing θ ~ q and
running the last layer gives: `predictor` samples K logits that way (the GLM and MC predictives
coincide for a last layer).

The prior precision λ is given, or chosen by the Laplace marginal likelihood
    log p(D | λ) ≈ log p(D | θ*) + (P/2) log λ − (λ/2) ‖θ*‖² − ½ log det Λ(λ) + const
over a log grid (`tune_prior_precision`).

It is fitted after training, not by the train loop: `fit_run(run, structure=...)` takes a
trained point run (`bnnjax.load` of "mlp" or "point/<network>") and returns a Run whose predict /
evaluate use the Laplace predictive; structure "diagonal" and "kfac" (every layer, GLM or MC
predictive) are `bnnjax.methods.laplace_layers`.
"""

import dataclasses
from typing import Any, Callable, NamedTuple, Optional

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from bnnjax import data as data_lib
from bnnjax.methods import ensemble, laplace_layers
from bnnjax.methods.common import targets
from bnnjax.task import CLASSIFIER, REGRESSOR, DataInfo, Predictor, Task


class LaplacePosterior(NamedTuple):
  """q(θ) = N(θ*, Λ⁻¹) over the last layer; the other weights at the point estimate.

  params: the network's Haiku params (the MAP).
  precision: [P, P] Λ = GGN + prior_precision I, in float32 (a bfloat16 GGN's too: the draws and
    moments factor it).
  ggn: [P, P] the summed generalised Gauss-Newton of the NLL in the last layer's weights.
  prior_precision: scalar λ.
  """

  params: Any
  precision: jax.Array
  ggn: jax.Array
  prior_precision: jax.Array


class _LastLayer(NamedTuple):
  features: hk.Transformed  # apply(params, x) -> (features [B, H] into the last layer, outputs)
  name: Callable[[], str]  # the last layer's module name (known after a trace)


def last_layer(forward: Callable) -> _LastLayer:
  """The features entering `forward`'s last hk.Linear and the network's outputs.

  A one-line ValueError, at trace time, if forward calls no hk.Linear or its output is not
  the last hk.Linear's output (no dense last layer).
  """
  found = {}

  def features(x):
    calls = []

    def interceptor(next_fun, args, kwargs, context):
      out = next_fun(*args, **kwargs)
      if context.method_name == "__call__" and isinstance(context.module, hk.Linear):
        calls.append((context.module.module_name, args[0], out))
      return out

    with hk.intercept_methods(interceptor):
      out = forward(x)
    if not calls or calls[-1][2] is not out:
      raise ValueError(
        "Laplace needs a network whose output is its last hk.Linear's output "
        "(a dense last layer); this network has none"
      )
    name, phi, _ = calls[-1]
    if phi.ndim != 2:
      raise ValueError(f"Laplace needs the last hk.Linear's input as [B, H], got shape {phi.shape}")
    found["name"] = name
    return phi, out

  return _LastLayer(hk.without_apply_rng(hk.transform(features)), lambda: found["name"])


def _dense(layer, phi):
  out = phi @ layer["w"]
  return out + layer["b"] if "b" in layer else out


def batch_ggn(layer, phi, classification: bool, noise_std: float, weight=None) -> jax.Array:
  """[P, P] Σ_i weight_i J_iᵀ H_i J_i over features phi [B, H], θ = ravel(layer).

  The outputs are linear in θ, whose ravel order (b, then w) is the rows of [b; w] [H + 1, C]
  flattened: J_i = φ̃_iᵀ ⊗ I_C with φ̃_i = [1, φ_i] ([φ_i] without a bias), so that
  J_iᵀ H_i J_i = (φ̃_i φ̃_iᵀ) ⊗ H_i, summed without forming J. weight [B] (default ones) masks
  padded rows out.
  """
  outputs = _dense(layer, phi)  # [B, C]
  num_outputs = outputs.shape[-1]
  if classification:
    probs = jax.nn.softmax(outputs, -1)
    hessian = jax.vmap(jnp.diag)(probs) - probs[:, :, None] * probs[:, None, :]
  else:
    eye = jnp.eye(num_outputs, dtype=outputs.dtype) / noise_std**2
    hessian = jnp.broadcast_to(eye, (len(phi), *eye.shape))
  weight = jnp.ones(len(phi), phi.dtype) if weight is None else weight
  features = jnp.concatenate([jnp.ones((len(phi), 1), phi.dtype), phi], 1) if "b" in layer else phi
  blocks = jnp.einsum("bh,bk,bcd->hckd", features * weight[:, None], features, hessian)
  size = features.shape[1] * num_outputs
  return blocks.reshape(size, size)


def ggn(
  forward: Callable, params, x, classification: bool, noise_std: float = 1.0, batch_size: int = 500
) -> jax.Array:
  """[P, P] the last layer's GGN summed over every row of x (in batches of batch_size)."""
  split = last_layer(forward)
  step = jax.jit(lambda params, xb, n: _masked_ggn(split, params, xb, n, classification, noise_std))
  total = 0.0
  for start in range(0, len(x), batch_size):
    xb = np.asarray(x[start : start + batch_size], np.float32)
    n = len(xb)
    if n < batch_size and start > 0:  # pad the last batch: one compilation
      xb = np.concatenate([xb, np.repeat(xb[-1:], batch_size - n, 0)])
    total = total + step(params, jnp.asarray(xb), n)
  return total


def _masked_ggn(split: _LastLayer, params, xb, n, classification, noise_std):
  phi, _ = split.features.apply(params, xb)
  weight = (jnp.arange(len(phi)) < n).astype(phi.dtype)
  return batch_ggn(params[split.name()], phi, classification, noise_std, weight)


def log_marginal_likelihood_terms(ggn_matrix, theta_map, prior_precision) -> jax.Array:
  """The λ-dependent part of the Laplace evidence, for λ of any shape [...]:
  (P/2) log λ − (λ/2)‖θ*‖² − ½ log det(G + λI) (`laplace_layers.log_evidence_terms`)."""
  eigenvalues = jnp.linalg.eigvalsh(ggn_matrix)
  return laplace_layers.log_evidence_terms(eigenvalues, jnp.sum(theta_map**2), prior_precision)


def tune_prior_precision(
  ggn_matrix, theta_map, low: float = 1e-4, high: float = 1e6, num: int = 2001
) -> float:
  """λ maximising the Laplace marginal likelihood over a log grid of num points in [low, high]."""
  eigenvalues = jnp.linalg.eigvalsh(ggn_matrix)
  return laplace_layers.tune_prior_precision(eigenvalues, jnp.sum(theta_map**2), low, high, num)


def fit(
  forward: Callable,
  params,
  x,
  y,
  info: DataInfo,
  prior_precision: Optional[float] = 1.0,
  noise_std: float = 1.0,
  batch_size: int = 500,
) -> LaplacePosterior:
  """The last-layer Laplace posterior of a trained network on its training inputs x.

  Args:
    forward: the Haiku function x [B, *input_shape] -> outputs [B, C] the params belong to.
    params: its trained (MAP) Haiku params.
    x, y: the training set (y unused by the GGN; kept for the regression noise's caller).
    info: num_classes = 0 for a regressor with noise std noise_std.
    prior_precision: λ > 0, or None to tune it by the marginal likelihood.
  Returns:
    LaplacePosterior.
  """
  del y
  classification = ensemble.check_outputs(info)
  if prior_precision is not None and not prior_precision > 0:
    raise ValueError(f"prior_precision must be positive (or None to tune it), got {prior_precision!r}")
  split = last_layer(forward)
  jax.eval_shape(split.features.apply, params, jnp.zeros((1, *info.input_shape), jnp.float32))
  name = split.name()
  curvature = ggn(forward, params, x, classification, noise_std, min(batch_size, len(x)))
  theta, _ = ravel_pytree(params[name])
  lam = tune_prior_precision(curvature, theta) if prior_precision is None else float(prior_precision)
  # float32 even for a bfloat16 GGN: the draws and the GLM moments factor it (no bfloat16 Cholesky)
  precision = curvature + lam * jnp.eye(theta.size, dtype=jnp.float32)
  return LaplacePosterior(params, precision, curvature, jnp.float32(lam))


def sample_outputs(forward: Callable, posterior: LaplacePosterior, rng, x, num_samples: int):
  """K outputs [K, B, C]: θ_k = θ* + L⁻ᵀ ε_k with Λ = L Lᵀ, run through the last layer."""
  split = last_layer(forward)
  phi, _ = split.features.apply(posterior.params, x)
  layer = posterior.params[split.name()]
  theta, unravel = ravel_pytree(layer)
  chol = jnp.linalg.cholesky(posterior.precision)
  eps = jax.random.normal(rng, (num_samples, theta.size), theta.dtype)
  deltas = jax.scipy.linalg.solve_triangular(chol.T, eps.T, lower=False).T  # [K, P]
  return jax.vmap(lambda d: _dense(unravel(theta + d), phi))(deltas)


def output_moments(forward: Callable, posterior: LaplacePosterior, x, centred: bool = False):
  """The GLM predictive's mean f*(x) [B, C] and variances diag(J Σ Jᵀ) [B, C] of the outputs.

  centred: of the logits minus their mean over classes (the same softmax), whose variances
  leave out the common shift the likelihood cannot see (its variance is the prior's).
  """
  split = last_layer(forward)
  phi, outputs = split.features.apply(posterior.params, x)
  layer = posterior.params[split.name()]
  theta, unravel = ravel_pytree(layer)
  jac = jax.vmap(jax.jacfwd(lambda t, p: _dense(unravel(t), p[None])[0]), (None, 0))(theta, phi)
  if centred:
    outputs = outputs - outputs.mean(-1, keepdims=True)
    jac = jac - jac.mean(1, keepdims=True)
  chol = jnp.linalg.cholesky(posterior.precision)  # Σ = L⁻ᵀ L⁻¹: var = ‖L⁻¹ J_c‖²
  half = jax.scipy.linalg.solve_triangular(chol, jac.reshape(-1, theta.size).T, lower=True)
  return outputs, jnp.sum(half**2, 0).reshape(outputs.shape)


STRUCTURES = ("last_layer", *laplace_layers.STRUCTURES)
PREDICTIVES = ("mc", "glm", "closed_form")


def predictor(forward: Callable, info: DataInfo, noise_std: float = 1.0, predictive: str = "mc") -> Predictor:
  """The GLM predictive of a LaplacePosterior (see the module doc).

  predictive: "mc" or "glm" (the same for a last layer): K sampled outputs;
    "closed_form": one output (K = 1), for a classifier
    the probit approximation softmax(f* / sqrt(1 + π/8 var)) of the centred logits (see
    `output_moments`), for a regressor the exact
    Gaussian N(f*, noise_std² + var).
  sample(posterior, rng, x, num_samples) -> logits [K, B, C] or (means [K, B], stds [K, B]).
  """
  if predictive not in PREDICTIVES:
    raise ValueError(f"Laplace predictive must be one of {', '.join(PREDICTIVES)}, got {predictive!r}")
  classification = ensemble.check_outputs(info)

  def sample(posterior, rng, x, num_samples):
    if predictive == "closed_form":
      mean, var = output_moments(forward, posterior, x, centred=classification)
      if classification:
        return (mean / jnp.sqrt(1.0 + jnp.pi / 8.0 * var))[None]
      return mean[None, :, 0], jnp.sqrt(noise_std**2 + var[None, :, 0])
    outputs = sample_outputs(forward, posterior, rng, x, num_samples)
    if classification:
      return outputs
    means = outputs[..., 0]
    return means, jnp.full(means.shape, noise_std, means.dtype)

  return Predictor(CLASSIFIER if classification else REGRESSOR, sample)


def network_of(run) -> Callable:
  """The Haiku forward of a trained point run ("mlp" or "point/<network>")."""
  from bnnjax import models  # pylint: disable=import-outside-toplevel

  name = run.config.model.name
  method, network = models.COMPOSED.get(name, name.partition("/")[::2])
  if method != "point":
    raise ValueError(
      f"Laplace needs a trained point-estimate run (mlp or point/<network>), "
      f"got model {name!r} in {run.workdir}"
    )
  models.get(name)  # fills models.NETWORKS
  outputs = run.info.num_classes if run.info.num_classes > 0 else 1
  return models.NETWORKS[network].build(run.config.model, run.info, outputs)


def fit_run(
  run,
  structure: str = "last_layer",
  prior_precision: Optional[float] = None,
  noise_std: float = 1.0,
  eval_samples: int = 32,
  predictive: str = "glm",
  data_dir=None,
):
  """A trained point run with a Laplace posterior fitted on its training split.

  Args:
    run: a trained point run (`bnnjax.load` of "mlp" or "point/<network>").
    structure: "last_layer" (full GGN of the last hk.Linear, this module), "diagonal" (every
      weight) or "kfac" (every dense layer; a network of hk.Linear only): `laplace_layers`.
    prior_precision: λ > 0, or None to tune it by the marginal likelihood.
    eval_samples: K of the Task's evaluate (Run.evaluate and predict take their own K).
    predictive: "glm" (linearised) or "mc" (the network at sampled weights), the same for a
      last layer; "closed_form" (probit / exact Gaussian) for a last layer only.
  Returns:
    A bnnjax Run (params: the posterior; task: its evaluate and predictor) whose predict /
    evaluate use the Laplace predictive; its config.model.name reads "laplace/<name>" for a
    last layer, "laplace_diagonal/<name>" or "laplace_kfac/<name>" otherwise.
  """
  if structure not in STRUCTURES:
    raise ValueError(f"Laplace structure must be one of {', '.join(STRUCTURES)}, got {structure!r}")
  if structure == "last_layer" and predictive not in PREDICTIVES:
    raise ValueError(f"Laplace predictive must be one of {', '.join(PREDICTIVES)}, got {predictive!r}")
  if structure != "last_layer":
    laplace_layers.check_predictive(predictive)
  forward = network_of(run)
  train = data_lib.load_split(run.config.data, run.config.data.train_split, data_dir)
  x = run.inputs(train["x"])
  if structure == "last_layer":
    posterior = fit(forward, run.params, x, train["y"], run.info, prior_precision, noise_std)
    pred = predictor(forward, run.info, noise_std, "mc" if predictive == "glm" else predictive)
    name = f"laplace/{run.config.model.name}"
  else:
    posterior = laplace_layers.fit(forward, run.params, x, run.info, structure, prior_precision, noise_std)
    pred = laplace_layers.predictor(forward, run.info, noise_std, predictive)
    name = f"laplace_{structure}/{run.config.model.name}"
  classification = run.info.num_classes > 0

  def evaluate(posterior, rng, batch):
    outputs = pred.sample(posterior, rng, batch["x"], eval_samples)
    if classification:
      return ensemble.predictive_metrics(outputs, targets(batch), True, noise_std)
    from bnnjax.methods.mean_field import regression_metrics  # pylint: disable=import-outside-toplevel

    return regression_metrics(outputs[0], targets(batch), outputs[1])

  config = run.config.copy_and_resolve_references()
  config.model.name = name
  task = Task(run.task.init, run.task.loss, evaluate, predictor=pred)
  return dataclasses.replace(run, config=config, params=posterior, task=task)
