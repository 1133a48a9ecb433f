"""RealNVP (Dinh, Sohl-Dickstein & Bengio 2017): a density model with an exact likelihood.

A flow is an invertible map f from data x to a latent z with a standard normal
density. By the change of variables,

    log p(x) = log N(f(x); 0, I) + log |det df/dx|.

f is a chain of affine coupling layers. Each keeps the dimensions where its binary
mask is 1 and rescales and shifts the others by amounts computed from the kept ones:

    z = m * x + (1 - m) * (x * exp(s(m * x)) + t(m * x)),

so its Jacobian is triangular and log |det| = sum over (1 - m) of s. The masks
alternate between layers so every dimension gets transformed.

Direction convention: `forward` goes data -> latent (used for the density),
`inverse` goes latent -> data (used for sampling).

Written in a few lines of Haiku rather than with distrax bijectors: distrax needs
tfp-nightly (tensorflow-probability 0.25 does not import with jax 0.10), a large
unpinned dependency for about forty lines of arithmetic.

For MNIST (`config.model.preprocess = "dequantize_logit"`) pixels k/255 become
continuous by uniform dequantisation, x = (k + u) / 256 with u ~ U[0, 1), and are
mapped to the real line by the logit transform of RealNVP,
y = logit(alpha + (1 - 2 alpha) x). The flow models y; the logit's log-Jacobian is
added back so the density is over x in [0, 1)^D. Each 8-bit value owns a cell of
width 1/256, so E_u[log p(x)] - D log 256 is a lower bound on log P(k) of the
discrete image, and bits/dim = -(E_u[log p(x)] - D log 256) / (D log 2).
"""

from typing import Callable, NamedTuple, Sequence, Tuple

import haiku as hk
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from bnnjax.distributions import gaussian_log_prob
from bnnjax.task import DataInfo, Density, Model, Task

PREPROCESSINGS = ("none", "dequantize_logit")


# ----------------------------------------------------------------------------- masks


def alternating_masks(input_shape: Sequence[int], num_layers: int) -> np.ndarray:
  """[num_layers, D] binary masks, each keeping half the dimensions, alternating.

  Images (H, W, C) get a checkerboard over pixels; vectors keep every other entry.
  """
  if num_layers < 1:
    raise ValueError(f"a RealNVP flow needs at least one coupling layer, got {num_layers}")
  dim = int(np.prod(input_shape))
  if len(input_shape) == 3:
    h, w, c = input_shape
    checker = np.add.outer(np.arange(h), np.arange(w)) % 2
    pattern = np.broadcast_to(checker[:, :, None], (h, w, c)).reshape(-1)
  else:
    pattern = np.arange(dim) % 2
  masks = np.stack([pattern if i % 2 == 0 else 1 - pattern for i in range(num_layers)])
  masks = masks.astype(np.float32)
  check_masks(masks)
  return masks


def check_masks(masks: np.ndarray) -> None:
  """One-line errors for masks a coupling chain cannot use."""
  masks = np.asarray(masks)
  if masks.ndim != 2:
    raise ValueError(f"masks must be [num_layers, dim], got shape {masks.shape}")
  if masks.shape[0] == 0:
    raise ValueError("a RealNVP flow needs at least one coupling layer, got 0 masks")
  dim = masks.shape[1]
  if dim < 2 or dim % 2:
    raise ValueError(f"coupling masks split the data dimension in half: it must be even and >= 2, got {dim}")
  if not np.all((masks == 0) | (masks == 1)):
    raise ValueError("coupling masks must be binary (0 or 1)")
  kept = masks.sum(axis=1)
  if np.any(kept != dim // 2):
    raise ValueError(f"each coupling mask must keep half of the {dim} dimensions, got {kept.tolist()}")


# ---------------------------------------------------------------------- coupling layers


class AffineCoupling(hk.Module):
  """One affine coupling layer; s and t come from an MLP on the kept dimensions."""

  def __init__(self, mask: np.ndarray, hidden_sizes: Sequence[int], name=None):
    super().__init__(name=name)
    self.mask = jnp.asarray(mask)
    self.hidden_sizes = tuple(hidden_sizes)

  def _shift_and_log_scale(self, kept):
    dim = self.mask.shape[-1]
    h = hk.nets.MLP(self.hidden_sizes, activate_final=True, name="conditioner")(kept)
    # Zero-initialised output: every layer starts as the identity, which keeps
    # deep chains stable early in training.
    out = hk.Linear(2 * dim, w_init=jnp.zeros, name="shift_and_log_scale")(h)
    shift, raw_log_scale = jnp.split(out, 2, axis=-1)
    # A learned bound on |s| (RealNVP's tanh scaling) stops exp(s) from exploding.
    bound = hk.get_parameter("log_scale_bound", [dim], init=jnp.ones)
    log_scale = bound * jnp.tanh(raw_log_scale)
    free = 1.0 - self.mask
    return shift * free, log_scale * free

  def forward(self, x) -> Tuple[jax.Array, jax.Array]:
    """x -> z and log |det dz/dx| per example."""
    shift, log_scale = self._shift_and_log_scale(x * self.mask)
    z = x * self.mask + (1.0 - self.mask) * (x * jnp.exp(log_scale) + shift)
    return z, log_scale.sum(-1)

  def inverse(self, z) -> Tuple[jax.Array, jax.Array]:
    """z -> x and log |det dx/dz| per example; the kept half of z equals that of x."""
    shift, log_scale = self._shift_and_log_scale(z * self.mask)
    x = z * self.mask + (1.0 - self.mask) * (z - shift) * jnp.exp(-log_scale)
    return x, -log_scale.sum(-1)


class RealNVP(hk.Module):
  """A chain of affine coupling layers over flat [B, D] inputs, with a N(0, I) base."""

  def __init__(self, masks: np.ndarray, hidden_sizes: Sequence[int], name="real_nvp"):
    super().__init__(name=name)
    check_masks(masks)
    self.dim = masks.shape[1]
    self.layers = [AffineCoupling(m, hidden_sizes, name=f"coupling_{i}") for i, m in enumerate(masks)]

  def forward(self, x):
    log_det = jnp.zeros(x.shape[:-1])
    for layer in self.layers:
      x, layer_log_det = layer.forward(x)
      log_det += layer_log_det
    return x, log_det

  def inverse(self, z):
    log_det = jnp.zeros(z.shape[:-1])
    for layer in reversed(self.layers):
      z, layer_log_det = layer.inverse(z)
      log_det += layer_log_det
    return z, log_det

  def log_prob(self, x):
    z, log_det = self.forward(x)
    return standard_normal_log_prob(z) + log_det


def standard_normal_log_prob(z):
  """log N(z; 0, I), summed over the last axis."""
  return gaussian_log_prob(z, 0.0, 1.0).sum(-1)


# ------------------------------------------------------------------- pure functions


class Flow(NamedTuple):
  """Pure functions of (params, flat inputs [B, D]); Haiku stays inside."""

  dim: int
  init: Callable[[jax.Array, jax.Array], hk.Params]
  forward: Callable  # (params, x) -> (z, log_det)
  inverse: Callable  # (params, z) -> (x, log_det)
  log_prob: Callable  # (params, x) -> [B]


def make_flow(masks: np.ndarray, hidden_sizes: Sequence[int]) -> Flow:
  """A RealNVP with these masks; inputs of the wrong width fail before tracing the network."""
  check_masks(masks)
  dim = int(np.shape(masks)[1])

  def build():
    flow = RealNVP(masks, hidden_sizes)
    return flow.forward, (flow.forward, flow.inverse, flow.log_prob)

  transformed = hk.without_apply_rng(hk.multi_transform(build))
  forward, inverse, log_prob = transformed.apply

  def checked(fn):
    fn = jax.jit(fn)  # compiled once per input shape, also when called outside jit

    def wrapped(params, x):
      check_dimension(x, dim)
      return fn(params, x)

    return wrapped

  return Flow(dim, checked(transformed.init), checked(forward), checked(inverse), checked(log_prob))


def check_dimension(x, dim: int) -> None:
  if x.ndim < 1 or x.shape[-1] != dim:
    raise ValueError(f"this flow models {dim}-dimensional data, got inputs of shape {tuple(x.shape)}")


def sample(flow: Flow, params, rng, num_samples: int) -> jax.Array:
  """Draws [num_samples, D] from the flow: z ~ N(0, I), x = f^{-1}(z)."""
  z = jax.random.normal(rng, (num_samples, flow.dim))
  return flow.inverse(params, z)[0]


# ------------------------------------------------------------------ MNIST preprocessing


def dequantize(rng, x):
  """Pixels k/255 -> (k + u) / 256 with u ~ U[0, 1): a continuous point in k's cell."""
  k = jnp.round(255.0 * x)
  return (k + jax.random.uniform(rng, x.shape)) / 256.0


def logit_transform(x, alpha: float):
  """y = logit(alpha + (1 - 2 alpha) x) and log |det dy/dx| summed over the last axis.

  alpha keeps the logit away from +-infinity at x = 0 and x -> 1.
  """
  p = alpha + (1.0 - 2.0 * alpha) * x
  y = jnp.log(p) - jnp.log1p(-p)
  log_det = (jnp.log1p(-2.0 * alpha) - jnp.log(p) - jnp.log1p(-p)).sum(-1)
  return y, log_det


def bits_per_dim(log_density, dim: int):
  """Bits per 8-bit dimension from log p of dequantised data in [0, 1)^D."""
  return -(log_density - dim * jnp.log(256.0)) / (dim * jnp.log(2.0))


def density_metrics(log_p, discrete: bool, dim: int) -> dict:
  """Batch means of per-example log p [B]: log_lik, nll, and bits_per_dim for 8-bit data."""
  metrics = {"log_lik": log_p.mean(), "nll": -log_p.mean()}
  if discrete:
    metrics["bits_per_dim"] = bits_per_dim(log_p, dim).mean()
  return metrics


def inverse_logit_transform(y, alpha: float):
  """x = (sigmoid(y) - alpha) / (1 - 2 alpha), the inverse of `logit_transform`, clipped to [0, 1]."""
  return jnp.clip((jax.nn.sigmoid(y) - alpha) / (1.0 - 2.0 * alpha), 0.0, 1.0)


# -------------------------------------------------------------------------- the Task


def _check_model_config(m) -> None:
  if m.num_coupling_layers < 1:
    raise ValueError(f"config.model.num_coupling_layers must be >= 1, got {m.num_coupling_layers}")
  if len(m.hidden_sizes) == 0 or any(h < 1 for h in m.hidden_sizes):
    raise ValueError(f"config.model.hidden_sizes must be positive widths, got {tuple(m.hidden_sizes)}")
  if m.preprocess not in PREPROCESSINGS:
    raise ValueError(f"config.model.preprocess must be one of {PREPROCESSINGS}, got {m.preprocess!r}")
  if not 0.0 <= m.logit_alpha < 0.5:
    raise ValueError(f"config.model.logit_alpha must be in [0, 0.5), got {m.logit_alpha}")


def flat_inputs(x, input_shape) -> jax.Array:
  """x [B, *input_shape] -> [B, D]; a one-line ValueError for any other shape."""
  x = jnp.asarray(x)
  if tuple(x.shape[1:]) != tuple(input_shape):
    raise ValueError(
      f"this flow was built for inputs of shape {tuple(input_shape)}, got a batch of shape {tuple(x.shape)}"
    )
  return x.reshape(x.shape[0], -1)


def make_density(m, info: DataInfo, flow: Flow) -> Density:
  """The Density capability of `flow` on inputs [B, *info.input_shape] (see bnnjax.task.Density).

  log_prob(params, rng, x) -> [B]: of x itself, or (preprocess "dequantize_logit") of a
  dequantisation of x drawn with rng, through the logit, over [0, 1)^D.
  sample(params, rng, num) -> [num, *input_shape], mapped back to [0, 1] for images.
  """
  discrete = m.preprocess == "dequantize_logit"
  shape = tuple(info.input_shape)

  def log_prob(params, rng, x):
    x = flat_inputs(x, shape)
    if not discrete:
      return flow.log_prob(params, x)
    y, logit_log_det = logit_transform(dequantize(rng, x), m.logit_alpha)
    return flow.log_prob(params, y) + logit_log_det

  def draw(params, rng, num):
    y = sample(flow, params, rng, num)
    x = inverse_logit_transform(y, m.logit_alpha) if discrete else y
    return x.reshape((num,) + shape)

  return Density(log_prob=log_prob, sample=draw, discrete=discrete)


def make_task(m, info: DataInfo, restored=None) -> Task:
  """Maximum likelihood for a RealNVP (`m` = config.model) on flattened inputs of shape
  info.input_shape; the Task declares its Density."""
  del restored
  _check_model_config(m)
  flow = make_flow(alternating_masks(info.input_shape, m.num_coupling_layers), m.hidden_sizes)
  density = make_density(m, info, flow)

  metrics_of = lambda log_p: density_metrics(log_p, density.discrete, flow.dim)

  def init(rng, batch):
    return flow.init(rng, flat_inputs(batch["x"], info.input_shape))

  def loss(params, rng, batch, step):
    del step
    log_p = density.log_prob(params, rng, batch["x"])
    # Per dimension so the learning rate means the same for 2-D and 784-D data.
    return -log_p.mean() / flow.dim, metrics_of(log_p)

  def evaluate(params, rng, batch):
    return metrics_of(density.log_prob(params, rng, batch["x"]))

  return Task(init, loss, evaluate, density=density)


def default_model_config() -> ml_collections.ConfigDict:
  """Every config.model field with its default for a 2-D density (configs/ override them)."""
  m = ml_collections.ConfigDict()
  m.name = "flow"
  m.num_coupling_layers = 8
  m.hidden_sizes = (64, 64)  # each conditioner MLP
  m.preprocess = "none"  # "none" | "dequantize_logit" (8-bit images; reports bits/dim)
  m.logit_alpha = 0.05  # RealNVP's logit squeeze, used by "dequantize_logit"
  return m


MODEL = Model(name="flow", default_config=default_model_config, make_task=make_task)
