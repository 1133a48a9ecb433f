"""Laplace over every layer of a trained network: diagonal and KFAC posteriors (MacKay 1992;
Ritter et al. 2018; Daxberger et al. 2021), their marginal likelihood, their predictive samples.

Around the MAP θ* of a trained point network, q(θ) = N(θ*, Λ⁻¹), Λ = Ĝ + λ I, with Ĝ an
approximation of the generalised Gauss-Newton Σ_i J_iᵀ H_i J_i of the NLL (H_i = diag(p_i) − p_i p_iᵀ
for a softmax, I / noise_std² for a Gaussian):

  "diagonal"  Ĝ = diag(GGN) over every weight, exact. A network of dense layers only gets it from
              the factors' pass below, Σ_i Σ_c ã_i² (g_ic²)ᵀ per layer (the per-example gradient
              of class c is ã_i g_icᵀ): one backward pass per class and batch. Any other network
              (convolutions) gets the exact Fisher diagonal of `bnnjax.methods.fisher` (equal to
              the GGN's for these likelihoods; per-example gradients: 75 times slower per row on the
              784-400-400-10 MLP, measured under load).
  "kfac"      Ĝ block diagonal over the dense layers (every weight must sit in an hk.Linear called
              once on inputs [B, in]); the block of a layer with input a and output z is Ā ⊗ G:
                  Ā = (1/N) Σ_i ã_i ã_iᵀ,    ã_i = [a_i, 1]      ([in + 1, in + 1], the 1 for the bias)
                  G = Σ_i Σ_c g_ic g_icᵀ,    g_ic = (∂f_i/∂z_i)ᵀ s_ic   ([out, out])
              with H_i = Σ_c s_ic s_icᵀ the exact square root (s_ic = √p_ic (e_c − p_i), or e_c /
              noise_std): every class, no sampled label, deterministic. For one example (N = 1)
              Ā ⊗ G is the layer's exact GGN block; for N it approximates Σ_i A_i ⊗ G_i by the
              mean of the A_i times the sum of the G_i (laplace-torch's scaling). Haiku keeps w
              [in, out] and b [out] apart; the block is over the augmented [w; b] [in + 1, out]
              flattened row-major, i.e. over (w.ravel(), b), with Kronecker index (row j, column k).
              With Ā = Q_A diag(α) Q_Aᵀ and G = Q_G diag(γ) Q_Gᵀ the layer's precision is
              (Q_A ⊗ Q_G) diag(α ⊗ γ + λ) (Q_A ⊗ Q_G)ᵀ.

The prior precision λ (one for every weight) is given, or maximises the Laplace evidence
    log p(D | λ) ≈ log p(D | θ*) + (P/2) log λ − (λ/2) ‖θ*‖² − ½ Σ_j log(e_j + λ)
over a log grid, e_j the eigenvalues of Ĝ (the diagonal itself; α_j γ_k for KFAC).

Weights are drawn as θ* + δ, δ = Λ^(-1/2) ε (per layer Q_A [E / √(α γᵀ + λ)] Q_Gᵀ for KFAC), and the
predictive (`predictor`) is "mc": the network at θ* + δ_k, or "glm": the linearised network
f*(x) + J(x) δ_k (one jax.jvp per draw), exact samples of the GLM predictive N(f*(x), J Σ Jᵀ).
"""

from typing import Any, Callable, Dict, NamedTuple, Optional

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

from bnnjax.methods import ensemble, fisher
from bnnjax.task import CLASSIFIER, REGRESSOR, DataInfo, Predictor

STRUCTURES = ("diagonal", "kfac")
PREDICTIVES = ("mc", "glm")


class DiagonalPosterior(NamedTuple):
  """params: the MAP (Haiku params); ggn: diag(GGN), shaped like params; prior_precision: λ."""

  params: Any
  ggn: Any
  prior_precision: jax.Array

  @property
  def precision(self):
    """diag(GGN) + λ, shaped like params."""
    return jax.tree_util.tree_map(lambda d: d + self.prior_precision, self.ggn)


class KronFactors(NamedTuple):
  """One dense layer's Ā [in + 1, in + 1] ([in, in] without a bias) and G [out, out], and their
  eigendecompositions."""

  a: jax.Array
  g: jax.Array
  a_eigenvalues: jax.Array  # α [in + 1]
  a_vectors: jax.Array  # Q_A [in + 1, in + 1]
  g_eigenvalues: jax.Array  # γ [out]
  g_vectors: jax.Array  # Q_G [out, out]


class KFACPosterior(NamedTuple):
  """params: the MAP; factors: {layer name: KronFactors}; prior_precision: λ."""

  params: Any
  factors: Dict[str, KronFactors]
  prior_precision: jax.Array


def check_structure(structure: str) -> None:
  if structure not in STRUCTURES:
    raise ValueError(
      f"Laplace structure must be one of last_layer, {', '.join(STRUCTURES)}, got {structure!r}"
    )


def check_predictive(predictive: str) -> None:
  if predictive not in PREDICTIVES:
    raise ValueError(
      f"Laplace predictive for a diagonal or KFAC posterior must be one of {', '.join(PREDICTIVES)}, "
      f"got {predictive!r}"
    )


# ---------------------------------------------------------------- the marginal likelihood


def log_evidence_terms(eigenvalues, theta_sq_norm, prior_precision) -> jax.Array:
  """The λ-dependent part of the Laplace evidence for λ of any shape [...], of a curvature with
  eigenvalues e [P] (clipped at 0) around θ* with ‖θ*‖² = theta_sq_norm:
  (P/2) log λ − (λ/2)‖θ*‖² − ½ Σ_j log(e_j + λ). Mapped over λ (memory P, not P × grid)."""
  e = jnp.clip(jnp.asarray(eigenvalues, jnp.float32).ravel(), 0.0)
  lam = jnp.asarray(prior_precision, jnp.float32)

  def one(lam1):
    return 0.5 * e.size * jnp.log(lam1) - 0.5 * lam1 * theta_sq_norm - 0.5 * jnp.sum(jnp.log(e + lam1))

  return jax.lax.map(one, lam.ravel()).reshape(lam.shape)


def tune_prior_precision(eigenvalues, theta_sq_norm, low=1e-4, high=1e6, num=2001) -> float:
  """λ maximising `log_evidence_terms` over a log grid of num points in [low, high]."""
  grid = jnp.logspace(np.log10(low), np.log10(high), num)
  return float(grid[jnp.argmax(jax.jit(log_evidence_terms)(eigenvalues, theta_sq_norm, grid))])


def curvature_eigenvalues(posterior) -> jax.Array:
  """[P] the eigenvalues of Ĝ (without λ): the diagonal, or α_j γ_k of every KFAC block."""
  if isinstance(posterior, KFACPosterior):
    return jnp.concatenate(
      [jnp.outer(f.a_eigenvalues, f.g_eigenvalues).ravel() for f in posterior.factors.values()]
    )
  return jnp.concatenate([d.ravel() for d in jax.tree_util.tree_leaves(posterior.ggn)])


def _sq_norm(params) -> jax.Array:
  return sum(jnp.sum(jnp.square(leaf)) for leaf in jax.tree_util.tree_leaves(params))


# ---------------------------------------------------------------- KFAC factors


AGAIN = " (called again)"


def _tapped(forward: Callable) -> hk.Transformed:
  """apply(params, x, taps) -> (outputs, {dense layer: its input [B, in]}), taps[layer] [B, out]
  added to each hk.Linear's output (taps None: nothing added); a layer called again is recorded
  as "<name> (called again)" (not a layer KFAC or the diagonal's dense pass can take)."""

  def tapped(x, taps):
    inputs = {}

    def interceptor(next_fun, args, kwargs, context):
      out = next_fun(*args, **kwargs)
      if context.method_name == "__call__" and isinstance(context.module, hk.Linear):
        name = context.module.module_name
        inputs[name + AGAIN if name in inputs else name] = args[0]
        if taps is not None:
          out = out + taps[name]
      return out

    with hk.intercept_methods(interceptor):
      out = forward(x)
    return out, inputs

  return hk.without_apply_rng(hk.transform(tapped))


def _linear_inputs(forward: Callable, params, input_shape) -> dict:
  """{hk.Linear name: its input's jax.ShapeDtypeStruct} (nothing computed)."""
  example = jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)
  return jax.eval_shape(_tapped(forward).apply, params, example, None)[1]


def _all_dense(inputs: dict, params) -> bool:
  return bool(inputs) and set(params) == set(inputs) and all(a.ndim == 2 for a in inputs.values())


def dense_layers(forward: Callable, params, input_shape) -> Dict[str, tuple]:
  """{layer name: (in, out, has a bias)} of forward's hk.Linear layers, which must hold every weight.

  A one-line ValueError for a network with no dense layer, a module that is not one (a
  convolution: name given), or a dense layer whose input is not [B, in].
  """
  inputs = _linear_inputs(forward, params, input_shape)
  if not inputs:
    raise ValueError("KFAC Laplace needs dense layers (hk.Linear); this network has none")
  again = [name for name in inputs if name.endswith(AGAIN)]
  if again:
    raise ValueError(
      f"KFAC Laplace needs each hk.Linear called once; {again[0][: -len(AGAIN)]!r} is called again"
    )
  others = sorted(set(params) - set(inputs))
  if others:
    raise ValueError(
      f"KFAC Laplace covers dense layers (hk.Linear) only; layer {others[0]!r} is not one "
      "(structure='diagonal' covers every layer)"
    )
  flat = [name for name, a in inputs.items() if a.ndim != 2]
  if flat:
    raise ValueError(
      f"KFAC Laplace needs a dense layer's input as [B, in]; {flat[0]!r} gets {inputs[flat[0]].shape}"
    )
  return {name: (a.shape[1], params[name]["w"].shape[1], "b" in params[name]) for name, a in inputs.items()}


def _output_sqrt(outputs, classification: bool, noise_std: float) -> jax.Array:
  """[B, C, C] S_i with S_i S_iᵀ = H_i; column c is s_ic."""
  if classification:
    probs = jax.nn.softmax(outputs, -1)
    eye = jnp.eye(outputs.shape[-1], dtype=outputs.dtype)
    return (eye - probs[:, :, None]) * jnp.sqrt(probs)[:, None, :]  # (e_c − p) √p_c
  return jnp.broadcast_to(
    jnp.eye(outputs.shape[-1], dtype=outputs.dtype) / noise_std, (*outputs.shape, outputs.shape[-1])
  )


def _batch_curvature(apply, params, xb, weight, layers, classification, noise_std, kfac: bool):
  """Per layer, over one batch xb with weight [B] in {0, 1}: KFAC's (Σ_i w_i ã_i ã_iᵀ,
  Σ_i w_i Σ_c g_ic g_icᵀ), or (kfac False) the exact GGN diagonal over [w; b],
  Σ_i w_i Σ_c ã_i² g_ic²ᵀ [in + 1, out] (the per-example gradient of class c is ã_i g_icᵀ)."""
  zeros = {name: jnp.zeros((len(xb), out), xb.dtype) for name, (_, out, _) in layers.items()}
  outputs, vjp, inputs = jax.vjp(lambda taps: apply(params, xb, taps), zeros, has_aux=True)
  roots = _output_sqrt(outputs, classification, noise_std)  # [B, C, C]
  grads = jax.vmap(lambda s: vjp(s)[0])(jnp.moveaxis(roots, 2, 0))  # {layer: [C, B, out]}
  out = {}
  for name, (_, _, bias) in layers.items():
    a, g = inputs[name], grads[name]
    if bias:  # ã = [a, 1]
      a = jnp.concatenate([a, jnp.ones((len(xb), 1), xb.dtype)], 1)
    if kfac:
      out[name] = (jnp.einsum("bi,bj,b->ij", a, a, weight), jnp.einsum("cbo,cbp,b->op", g, g, weight))
    else:
      out[name] = jnp.einsum("bi,cbo,b->io", a * a, g * g, weight)
  return out


def layer_curvature(
  forward: Callable,
  params,
  x,
  classification: bool,
  noise_std: float = 1.0,
  batch_size: int = 500,
  kfac: bool = True,
) -> Dict[str, Any]:
  """Over the rows of x [N, ...] (batches of batch_size), for every dense layer: KFAC's (Ā, G)
  (see the module doc), or (kfac False) the exact GGN diagonal, {"w": [in, out], "b": [out]}."""
  x = np.asarray(x, np.float32)
  layers = dense_layers(forward, params, x.shape[1:])
  apply = _tapped(forward).apply
  batch_size = min(batch_size, len(x))
  step = jax.jit(lambda p, xb, w: _batch_curvature(apply, p, xb, w, layers, classification, noise_std, kfac))
  total = None
  for xb, weight in fisher.padded_chunks(x, batch_size):
    sums = step(params, xb, weight)
    total = sums if total is None else jax.tree_util.tree_map(jnp.add, total, sums)
  if kfac:
    return {name: (a / len(x), g) for name, (a, g) in total.items()}
  return {
    name: {"w": d[: layers[name][0]], **({"b": d[layers[name][0]]} if layers[name][2] else {})}
    for name, d in total.items()
  }


def _kron_factors(a, g) -> KronFactors:
  a_eigenvalues, a_vectors = jnp.linalg.eigh(a)
  g_eigenvalues, g_vectors = jnp.linalg.eigh(g)
  return KronFactors(a, g, jnp.clip(a_eigenvalues, 0.0), a_vectors, jnp.clip(g_eigenvalues, 0.0), g_vectors)


def kfac_precision(factors: KronFactors, prior_precision) -> jax.Array:
  """[P_l, P_l] a layer's dense Ā ⊗ G + λ I, over (w.ravel(), b) (for checks on small layers)."""
  return jnp.kron(factors.a, factors.g) + prior_precision * jnp.eye(factors.a.shape[0] * factors.g.shape[0])


# ---------------------------------------------------------------- fitting


def fit(
  forward: Callable,
  params,
  x,
  info: DataInfo,
  structure: str,
  prior_precision: Optional[float] = None,
  noise_std: float = 1.0,
  batch_size: int = 500,
):
  """The diagonal or KFAC Laplace posterior of a trained network on its training inputs.

  Args:
    forward: the Haiku function x [B, *input_shape] -> outputs [B, C] (C = 1: a regressor).
    params: its trained (MAP) Haiku params.
    x: the training inputs [N, *input_shape].
    info: num_classes = 0 for a regressor with noise std noise_std.
    structure: "diagonal" or "kfac".
    prior_precision: λ > 0, or None to tune it by the marginal likelihood.
  Returns:
    DiagonalPosterior or KFACPosterior.
  """
  check_structure(structure)
  classification = ensemble.check_outputs(info)
  if prior_precision is not None and not prior_precision > 0:
    raise ValueError(f"prior_precision must be positive (or None to tune it), got {prior_precision!r}")
  zero = jnp.float32(0.0)
  if structure == "kfac":
    factors = layer_curvature(forward, params, x, classification, noise_std, batch_size)
    posterior = KFACPosterior(params, {k: _kron_factors(*v) for k, v in factors.items()}, zero)
  elif _all_dense(_linear_inputs(forward, params, np.shape(x)[1:]), params):  # one pass per batch
    diag = layer_curvature(forward, params, x, classification, noise_std, batch_size, kfac=False)
    posterior = DiagonalPosterior(params, jax.tree_util.tree_map(lambda p, d: d, params, diag), zero)
  else:  # convolutions too: per-example gradients of every class (bnnjax.methods.fisher)
    posterior = DiagonalPosterior(
      params, fisher.diagonal_fisher(forward, params, x, classification, noise_std), zero
    )
  if prior_precision is None:
    prior_precision = tune_prior_precision(curvature_eigenvalues(posterior), _sq_norm(params))
  return posterior._replace(prior_precision=jnp.float32(prior_precision))


# ---------------------------------------------------------------- sampling and the predictive


def sample_deltas(posterior, rng, num_samples: int):
  """K draws δ ~ N(0, Λ⁻¹), a pytree shaped like params with a leading axis [K]."""
  params = posterior.params
  if isinstance(posterior, DiagonalPosterior):
    leaves, treedef = jax.tree_util.tree_flatten(posterior.precision)
    keys = jax.random.split(rng, len(leaves))
    draws = [
      jax.random.normal(k, (num_samples, *p.shape), p.dtype) / jnp.sqrt(p) for k, p in zip(keys, leaves)
    ]
    return jax.tree_util.tree_unflatten(treedef, draws)
  deltas = {}
  for i, (name, f) in enumerate(sorted(posterior.factors.items())):
    scale = jax.lax.rsqrt(jnp.outer(f.a_eigenvalues, f.g_eigenvalues) + posterior.prior_precision)
    eps = jax.random.normal(jax.random.fold_in(rng, i), (num_samples, *scale.shape), scale.dtype)
    block = jnp.einsum("ij,kjl,ml->kim", f.a_vectors, eps * scale, f.g_vectors)  # Q_A E Q_Gᵀ
    rows = params[name]["w"].shape[0]  # [w; b]: the bias is the last row where there is one
    deltas[name] = {"w": block[:, :rows], **({"b": block[:, rows]} if "b" in params[name] else {})}
  return jax.tree_util.tree_map(lambda p, d: d.astype(p.dtype), params, deltas)


def sample_outputs(
  forward: Callable, posterior, rng, x, num_samples: int, predictive: str = "glm"
) -> jax.Array:
  """[K, B, C] outputs: "mc" f(x; θ* + δ_k), "glm" f(x; θ*) + J(x) δ_k (exact linearised samples)."""
  check_predictive(predictive)
  apply = hk.without_apply_rng(hk.transform(forward)).apply
  params = posterior.params
  deltas = sample_deltas(posterior, rng, num_samples)
  if predictive == "mc":
    return jax.vmap(lambda d: apply(jax.tree_util.tree_map(jnp.add, params, d), x))(deltas)
  mean = apply(params, x)
  return mean + jax.vmap(lambda d: jax.jvp(lambda p: apply(p, x), (params,), (d,))[1])(deltas)


def predictor(
  forward: Callable, info: DataInfo, noise_std: float = 1.0, predictive: str = "glm"
) -> Predictor:
  """The Laplace predictive of a DiagonalPosterior or KFACPosterior (predictive "mc" or "glm").

  sample(posterior, rng, x, num_samples) -> logits [K, B, C] or (means [K, B], stds [K, B]).
  """
  check_predictive(predictive)
  classification = ensemble.check_outputs(info)

  def sample(posterior, rng, x, num_samples):
    outputs = sample_outputs(forward, posterior, rng, x, num_samples, predictive)
    if classification:
      return outputs
    means = outputs[..., 0]
    return means, jnp.full(means.shape, noise_std, means.dtype)

  return Predictor(CLASSIFIER if classification else REGRESSOR, sample)
