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

"local" and "flipout" act on `hk.Linear` and `hk.ConvND` (hk.Conv1D/2D/3D) modules
through `hk.intercept_methods`, so the model stays a plain Haiku network. For a
convolution y = conv(x, W) + b the same algebra holds per output activation:
"local" samples y ~ N(conv(x, mu_W) + mu_b, conv(x*x, std_W^2) + std_b^2), "flipout"
adds conv(x * s_in, dW) * s_out with one sign per example and input channel (s_in)
and per example and output channel (s_out). Flipout perturbs the kernel itself, so it is
exactly the weight posterior's draw per example. Local reparameterisation is exact for each
output activation alone but draws the positions that share a kernel independently, where the
posterior correlates them: through a stack of layers its expected loss differs from the
mean-field ELBO (Kingma et al. 2015's approximation for convolutions; measured in
tests/test_conv.py). Every padding hk.ConvND takes (SAME,
VALID, explicit pairs, pad functions) pads with zeros, which commutes with x*x and
with the sign flips, so all are handled, as are strides, dilation, masks and
feature groups. A Bayesian leaf of any other module (a transposed or depthwise
convolution, a normalisation) is a one-line error naming the layer under them (use
"reparam").
"""

import haiku as hk
import jax
from jax import lax
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
    handled, seen = set(), {}
    linear_noise = _local_linear if estimator == "local" else _flipout_linear
    conv_noise = _local_conv if estimator == "local" else _flipout_conv

    def interceptor(next_fun, args, kwargs, context):
      module = context.module
      if context.method_name != "__call__":
        return next_fun(*args, **kwargs)
      name = module.module_name
      seen.setdefault(name, type(module).__name__)
      if name not in sigmas:
        return next_fun(*args, **kwargs)
      if isinstance(module, hk.Linear):
        handled.add(name)
        return linear_noise(lambda x: next_fun(x, *args[1:], **kwargs), args[0], sigmas[name])
      if isinstance(module, hk.ConvND):
        handled.add(name)
        return conv_noise(module, next_fun, args, kwargs, sigmas[name])
      return next_fun(*args, **kwargs)

    with hk.intercept_methods(interceptor):
      out = forward(x)
    missing = sorted(set(sigmas) - handled)
    if missing:
      layers = ", ".join(f"{name} ({seen.get(name, 'no module')})" for name in missing)
      raise ValueError(
        f"estimator {estimator!r} handles hk.Linear and hk.ConvND (hk.Conv2D) layers only; "
        f"Bayesian layer {layers} is neither; use estimator 'reparam'"
      )
    return out

  net = hk.transform(intercepted)
  init = lambda rng, x: hk.transform(forward).init(rng, x)
  scales = post.variances if estimator == "local" else post.stds
  apply = lambda posterior, rng, x: net.apply(posterior["mean"], rng, x, scales(posterior))
  return hk.Transformed(init, apply)


def _local_linear(next_fun, x, variance):
  """Sample y ~ N(x @ mu_W + mu_b, (x*x) @ std_W^2 + std_b^2) per example."""
  mean = next_fun(x)  # the layer at the posterior mean
  var = jnp.dot(x * x, variance["w"])
  if "b" in variance:
    var = var + variance["b"]
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


def _conv(module: hk.ConvND, x, w, precision=None):
  """module's convolution of x (batched [N, ...] or one example) with the kernel w, no bias."""
  unbatched = x.ndim == module.num_spatial_dims + 1
  out = lax.conv_general_dilated(
    x[None] if unbatched else x,
    w,
    window_strides=module.stride,
    padding=module.padding,
    lhs_dilation=module.lhs_dilation,
    rhs_dilation=module.kernel_dilation,
    dimension_numbers=module.dimension_numbers,
    feature_group_count=module.feature_group_count,
    precision=precision,
  )
  return out[0] if unbatched else out


def _masked(module: hk.ConvND, w):
  """w as the module applies it: times its fixed mask, if it has one."""
  return w if module.mask is None else w * module.mask


def _local_conv(module, next_fun, args, kwargs, variance):
  """Sample y ~ N(conv(x, mu_W) + mu_b, conv(x*x, std_W^2) + std_b^2) per output activation.

  Args:
    module: the hk.ConvND being called; next_fun, args, kwargs: its intercepted call
      (args[0] the input x, [N, *spatial, C] or one example).
    variance: {"w": variance of the kernel [*kernel, C_in / groups, C_out], "b": of the bias}.
  Returns:
    One draw of the output, shaped like the layer's.
  """
  x = args[0]
  mean = next_fun(*args, **kwargs)  # the layer at the posterior mean
  var = _conv(module, jnp.square(x), _masked(module, variance["w"]), kwargs.get("precision"))
  if "b" in variance:
    var = var + variance["b"]
  std = jnp.sqrt(var + 1e-30)  # the floor keeps d sqrt / d var finite where a patch is all zero
  return mean + std * standard_normal(hk.next_rng_key(), mean.shape, mean.dtype)


def _channel_signs(rng, module: hk.ConvND, shape, dtype):
  """Random signs [N, 1, .., 1, C] (or [N, C, 1, .., 1] channels first): one per example and
  channel, shared over the spatial positions, for a batched activation of `shape`."""
  signs_shape = [1] * len(shape)
  signs_shape[0] = shape[0]
  signs_shape[module.channel_index] = shape[module.channel_index]
  return jax.random.rademacher(rng, tuple(signs_shape), dtype)


def _flipout_conv(module, next_fun, args, kwargs, sigma):
  """y = conv(x, mu_W) + conv(x * s_in, std_W * eps) * s_out + mu_b + std_b * eps_b.

  One kernel perturbation per call, decorrelated across examples by signs per example and
  input channel (s_in) and per example and output channel (s_out), as Wen et al. 2018 and
  TFP's Convolution2DFlipout. Args and returns as `_local_conv`.
  """
  x = args[0]
  mean = next_fun(*args, **kwargs)
  unbatched = x.ndim == module.num_spatial_dims + 1
  x, batched_mean = (x[None], mean[None]) if unbatched else (x, mean)
  k_w, k_in, k_out, k_b = jax.random.split(hk.next_rng_key(), 4)
  delta_w = sigma["w"] * standard_normal(k_w, sigma["w"].shape, sigma["w"].dtype)
  sign_in = _channel_signs(k_in, module, x.shape, x.dtype)
  sign_out = _channel_signs(k_out, module, batched_mean.shape, mean.dtype)
  noise = _conv(module, x * sign_in, _masked(module, delta_w), kwargs.get("precision")) * sign_out
  out = mean + (noise[0] if unbatched else noise)
  if "b" in sigma:
    out = out + sigma["b"] * standard_normal(k_b, sigma["b"].shape, sigma["b"].dtype)
  return out


def sample_outputs_and_weights(network: hk.Transformed, posterior, rng, x, num_samples: int):
  """Reparameterisation's K outputs and the K weight draws that made them.

  Args:
    network: hk.transform of the plain forward function (apply(params, rng, x)).
    posterior, rng, x, num_samples: as `sample_outputs`.
  Returns:
    (outputs [K, ...], weights): the outputs `sample_outputs` gives with a "reparam"
    `bayesian_transform` of the same function and rng, and the Bayesian leaves of their draws
    (`post.bayesian_leaves`, each [K, *shape]) for the Monte Carlo KL to score.
  """
  if num_samples < 1:
    raise ValueError(f"num_samples must be >= 1, got {num_samples!r}")

  def one(key):
    params = post.sample_params(posterior, key)
    return network.apply(params, None, x), post.bayesian_leaves(posterior, params)

  return jax.vmap(one)(jax.random.split(rng, num_samples))


def sample_outputs(transformed: hk.Transformed, posterior, rng, x, num_samples: int):
  """K Monte Carlo outputs [K, ...] through jax.vmap over K rng keys."""
  if num_samples < 1:
    raise ValueError(f"num_samples must be >= 1, got {num_samples!r}")
  keys = jax.random.split(rng, num_samples)
  return jax.vmap(transformed.apply, in_axes=(None, 0, None))(posterior, keys, x)
