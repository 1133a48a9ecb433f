"""Monte Carlo gradient estimators: how a network is run under a weight posterior.

All three give unbiased samples of the network's output under q(w); they differ
in which noise is shared across the batch, hence in gradient variance and cost.

- "reparam": one weight draw w = mean + std * eps per batch (per Monte Carlo
  sample), shared by every example. Works for any layer. Draws one normal per
  weight (478k for 784-400-400-10) and materialises a sampled copy of the weights.
- "local" (local reparameterisation, Kingma et al. 2015): for a dense layer
  y = x W + b with independent Gaussian weights, y given x is Gaussian with
  mean x @ mu_W + mu_b and variance (x*x) @ std_W^2 + std_b^2; sample y
  directly. Noise is independent per example (lower variance) and only
  B x units normals are drawn: the fastest estimator.
- "flipout" (Wen et al. 2018): one weight perturbation dW = std * eps per batch,
  decorrelated across examples by random signs:
  y = x @ mu_W + ((x * s_in) @ dW) * s_out + b. Lower variance than "reparam"
  at the cost of a second matmul and as many normals.

"local" and "flipout" act on `hk.Linear` modules through `hk.intercept_methods`,
so the model stays a plain Haiku network; a Bayesian leaf outside an hk.Linear
is an error under them (use "reparam").
"""

import haiku as hk
import jax
import jax.numpy as jnp

from bnnjax import posterior as post
from bnnjax.distributions import standard_normal

ESTIMATORS = ("reparam", "local", "flipout")


def check_estimator(name: str) -> None:
  """A one-line ValueError naming the valid estimators if `name` is not one."""
  if name not in ESTIMATORS:
    raise ValueError(f"unknown estimator {name!r}; choose one of {', '.join(ESTIMATORS)}")


def bayesian_transform(forward, estimator: str) -> hk.Transformed:
  """hk.transform of `forward(x)` whose apply(posterior, rng, x) samples the output.

  apply runs the network once under one Monte Carlo draw of the weights; vmap it
  over rng for K samples. init(rng, x) returns the ordinary Haiku params.
  """
  check_estimator(estimator)
  if estimator == "reparam":
    net = hk.transform(forward)
    apply = lambda posterior, rng, x: net.apply(post.sample_params(posterior, rng), None, x)
    return hk.Transformed(net.init, apply)

  def intercepted(x, sigmas):
    handled = set()
    layer_noise = _local_linear if estimator == "local" else _flipout_linear

    def interceptor(next_fun, args, kwargs, context):
      module = context.module
      if context.method_name != "__call__" or not isinstance(module, hk.Linear):
        return next_fun(*args, **kwargs)
      name = module.module_name
      if name not in sigmas:
        return next_fun(*args, **kwargs)
      handled.add(name)
      return layer_noise(next_fun, args[0], sigmas[name])

    with hk.intercept_methods(interceptor):
      out = forward(x)
    missing = sorted(set(sigmas) - handled)
    if missing:
      raise ValueError(
        f"estimator {estimator!r} handles hk.Linear layers only; Bayesian "
        f"modules {missing} are not; use estimator 'reparam'"
      )
    return out

  net = hk.transform(intercepted)
  init = lambda rng, x: hk.transform(forward).init(rng, x)
  apply = lambda posterior, rng, x: net.apply(posterior["mean"], rng, x, post.stds(posterior))
  return hk.Transformed(init, apply)


def _local_linear(next_fun, x, sigma):
  """Sample y ~ N(x @ mu_W + mu_b, (x*x) @ std_W^2 + std_b^2) per example."""
  mean = next_fun(x)  # the layer at the posterior mean
  var = jnp.dot(x * x, jnp.square(sigma["w"]))
  if "b" in sigma:
    var = var + jnp.square(sigma["b"])
  # The tiny floor keeps d sqrt / d var finite where an input row is all zero.
  std = jnp.sqrt(var + 1e-30)
  return mean + std * standard_normal(hk.next_rng_key(), mean.shape, mean.dtype)


def _flipout_linear(next_fun, x, sigma):
  """y = x @ mu_W + ((x * s_in) @ (std_W * eps)) * s_out + mu_b + std_b * eps_b."""
  mean = next_fun(x)
  k_w, k_in, k_out, k_b = jax.random.split(hk.next_rng_key(), 4)
  delta_w = sigma["w"] * standard_normal(k_w, sigma["w"].shape, sigma["w"].dtype)
  sign_in = jax.random.rademacher(k_in, x.shape, x.dtype)
  sign_out = jax.random.rademacher(k_out, mean.shape, mean.dtype)
  out = mean + jnp.dot(x * sign_in, delta_w) * sign_out
  if "b" in sigma:
    out = out + sigma["b"] * standard_normal(k_b, sigma["b"].shape, sigma["b"].dtype)
  return out


def sample_outputs(transformed: hk.Transformed, posterior, rng, x, num_samples: int):
  """K Monte Carlo outputs [K, ...] through jax.vmap over K rng keys."""
  if num_samples < 1:
    raise ValueError(f"num_samples must be >= 1, got {num_samples!r}")
  keys = jax.random.split(rng, num_samples)
  return jax.vmap(transformed.apply, in_axes=(None, 0, None))(posterior, keys, x)
