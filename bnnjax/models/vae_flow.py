"""A Bernoulli VAE whose posterior q(z | x) is a diagonal Gaussian pushed through planar flows.

Planar flows (Rezende & Mohamed, 2015): K maps

    f_k(z) = z + u_k tanh(w_k . z + b_k),   log |det df_k/dz| = log |1 + u_k . psi_k(z)|,
    psi_k(z) = (1 - tanh^2(w_k . z + b_k)) w_k            (matrix determinant lemma),

applied to z_0 ~ N(mean(x), diag std(x)^2). The density of z_K = f_K o ... o f_1(z_0) is

    log q_K(z_K | x) = log q_0(z_0 | x) - sum_k log |det df_k/dz|,

and the ELBO, E_q[log p(x | z_K) + log p(z_K) - log q_K(z_K | x)], is estimated with
one reparameterised sample (the KL has no closed form any more). The flow parameters
(u_k, w_k, b_k) are amortised: a linear head on the encoder's last hidden layer.

f_k is invertible when w_k . u_k >= -1; u_k is reparameterised so that it always is:
u_hat = u + (m(w . u) - w . u) w / |w|^2 with m(a) = -1 + softplus(a), giving
w . u_hat = m(w . u) > -1.

Everything else (decoder, Bernoulli likelihood, prior, IWAE bound, KL warm-up, dynamic
binarisation) is the plain VAE's, imported from bnnjax.models.vae.
"""
from typing import Callable, NamedTuple, Optional, Sequence, Tuple

import haiku as hk
import jax
import jax.numpy as jnp

from bnnjax.models import vae
from bnnjax.task import DataInfo, Task


class PlanarParams(NamedTuple):
  """Parameters of K planar maps, per example: u, w [K, B, D], b [K, B, 1]."""
  u: jax.Array
  w: jax.Array
  b: jax.Array


# ----------------------------------------------------------------------- planar flows


def invertible_u(u: jax.Array, w: jax.Array) -> jax.Array:
  """u_hat with w . u_hat = -1 + softplus(w . u) > -1, so the planar map is invertible."""
  wu = (w * u).sum(-1, keepdims=True)
  target = -1.0 + jax.nn.softplus(wu)
  return u + (target - wu) * w / (w * w).sum(-1, keepdims=True)


def planar_map(z: jax.Array, u: jax.Array, w: jax.Array, b: jax.Array) -> Tuple[jax.Array, jax.Array]:
  """One planar map f(z) = z + u_hat tanh(w . z + b) and log |det df/dz|, batched over z's leading axes."""
  u_hat = invertible_u(u, w)
  activation = jnp.tanh((w * z).sum(-1, keepdims=True) + b)
  psi = (1.0 - activation**2) * w
  log_det = jnp.log(jnp.abs(1.0 + (psi * u_hat).sum(-1)))
  return z + u_hat * activation, log_det


def planar_flow(z: jax.Array, params: PlanarParams) -> Tuple[jax.Array, jax.Array]:
  """z_K = f_K o ... o f_1(z) and sum_k log |det df_k/dz|."""
  log_det = jnp.zeros(z.shape[:-1])
  for k in range(params.u.shape[0]):
    z, step_log_det = planar_map(z, params.u[k], params.w[k], params.b[k])
    log_det += step_log_det
  return z, log_det


def sample_flow_posterior(rng, mean, std, params: PlanarParams, num_samples: Optional[int] = None):
  """z_K ~ q_K(z | x) and log q_K(z_K | x); [num_samples, B, D] if num_samples."""
  z0 = vae.sample_posterior(rng, mean, std, num_samples)
  z, log_det = planar_flow(z0, params)
  return z, vae.posterior_log_prob(z0, mean, std) - log_det


# ----------------------------------------------------------------------------- networks


class FlowEncoder(hk.Module):
  """vae.Encoder's (mean, std), plus the K planar maps' parameters from the same hidden layer."""

  def __init__(self, hidden_sizes: Sequence[int], latent_size: int, num_flows: int,
               activation: str = "relu", name: str = "encoder"):
    super().__init__(name=name)
    self.hidden_sizes = tuple(hidden_sizes)
    self.latent_size = latent_size
    self.num_flows = num_flows
    self.activation = vae.ACTIVATIONS[activation]

  def __call__(self, x: jax.Array):
    h = vae.hidden_layers(self.hidden_sizes, self.activation, x.reshape(x.shape[0], -1))
    mean = hk.Linear(self.latent_size, name="mean")(h)
    std = jax.nn.softplus(hk.Linear(self.latent_size, name="std")(h)) + vae.MIN_STD
    k, d, batch = self.num_flows, self.latent_size, x.shape[0]
    raw = hk.Linear(k * (2 * d + 1), name="planar")(h).reshape(batch, k, 2 * d + 1)
    raw = jnp.swapaxes(raw, 0, 1)  # [K, B, 2D + 1]
    return mean, std, PlanarParams(raw[..., :d], raw[..., d:2 * d], raw[..., 2 * d:])


class Networks(NamedTuple):
  init: Callable  # (rng, x) -> params
  encode: Callable  # (params, x) -> (mean, std, PlanarParams)
  decode: Callable  # (params, z) -> logits


def make_networks(model_config, event_shape: Sequence[int]) -> Networks:
  def build():
    encoder = FlowEncoder(model_config.encoder_sizes, model_config.latent_size,
                          model_config.num_flows, model_config.activation)
    decoder = vae.Decoder(model_config.decoder_sizes, event_shape, model_config.activation)

    def init(x):
      mean, _, _ = encoder(x)
      return decoder(mean)

    return init, (encoder, decoder)

  transformed = hk.without_apply_rng(hk.multi_transform(build))
  encode, decode = transformed.apply
  return Networks(transformed.init, encode, decode)


# --------------------------------------------------------------------------------- bounds


def elbo_terms(networks: Networks, params, rng, x, event_ndim: int):
  """Per example (log p(x | z_K), log q_K(z_K | x) - log p(z_K)) from one sample z_K."""
  mean, std, planar = networks.encode(params, x)
  z, log_q = sample_flow_posterior(rng, mean, std, planar)
  log_px = vae.log_likelihood(networks.decode(params, z), x, event_ndim)
  return log_px, log_q - vae.prior_log_prob(z)


def log_weights(networks: Networks, params, rng, x, event_ndim: int, *, k: int,
                chunk_size: int = 100) -> jax.Array:
  """log p(x, z_i) - log q_K(z_i | x) for k flow-posterior samples, [k, B].

  The decoder runs on chunks of samples, as in vae.BernoulliVAE.log_weights.
  """
  vae.check_num_samples(k)
  mean, std, planar = networks.encode(params, x)
  chunk_size = min(chunk_size, k)
  num_chunks = -(-k // chunk_size)
  z, log_q = sample_flow_posterior(rng, mean, std, planar, num_chunks * chunk_size)

  def one_sample(z_i, log_q_i):
    log_px = vae.log_likelihood(networks.decode(params, z_i), x, event_ndim)
    return vae.log_importance_weights(log_px, vae.prior_log_prob(z_i), log_q_i)

  chunked = lambda a: a.reshape((num_chunks, chunk_size) + a.shape[1:])
  log_w = jax.lax.map(lambda args: jax.vmap(one_sample)(*args), (chunked(z), chunked(log_q)))
  return log_w.reshape((-1,) + log_w.shape[2:])[:k]


# --------------------------------------------------------------------------------- task


def _validate(model, info: DataInfo) -> None:
  vae.validate(model, info)  # the fields shared with the plain VAE
  if not model.num_flows >= 1:
    raise ValueError(f"config.model.num_flows must be >= 1 (use model 'vae' for none), got {model.num_flows}")
  if model.conditional or model.corruption or not model.variational:
    raise ValueError("the flow posterior supports the plain VAE only: set config.model.conditional=False, "
                     "corruption='' and variational=True")


def make_task(config, info: DataInfo) -> Task:
  """The plain VAE's task with q(z | x) replaced by a planar-flow posterior. Nats per example."""
  model_config = config.model
  _validate(model_config, info)
  if model_config.binarize_train == "none" and config.data.binarize != "static":
    raise ValueError("Bernoulli decoder needs binary data: set config.data.binarize='static' "
                     "or config.model.binarize_train='dynamic'")
  networks = make_networks(model_config, info.input_shape)
  binarize = vae.train_binarizer(model_config.binarize_train)
  event_ndim = len(info.input_shape)
  warmup, iwae_k = int(model_config.kl_warmup_steps), int(model_config.eval_iwae_samples)

  def terms(params, rng, batch):
    bin_rng, z_rng = jax.random.split(rng)
    x = binarize(bin_rng, batch["x"])
    return (x,) + elbo_terms(networks, params, z_rng, x, event_ndim)

  def init(rng, batch):
    return networks.init(rng, batch["x"])

  def loss(params, rng, batch, step):
    _, rec, kl = terms(params, rng, batch)
    beta = vae.kl_weight(step, warmup)
    metrics = {"elbo": vae.elbo(rec, kl).mean(), "reconstruction": rec.mean(), "kl": kl.mean(),
               "kl_weight": beta}
    return -(rec - beta * kl).mean(), metrics

  def evaluate(params, rng, batch):
    term_rng, iwae_rng = jax.random.split(rng)
    x, rec, kl = terms(params, term_rng, batch)
    metrics = {"elbo": vae.elbo(rec, kl).mean(), "reconstruction": rec.mean(), "kl": kl.mean()}
    if iwae_k > 0:
      log_w = log_weights(networks, params, iwae_rng, x, event_ndim, k=iwae_k)
      metrics[f"log_px_iwae{iwae_k}"] = vae.iwae_bound(log_w).mean()
    return metrics

  return Task(init, loss, evaluate)


def default_model_config():
  """The plain VAE's fields plus the number of planar maps."""
  m = vae.default_model_config()
  m.name = "vae_flow"
  m.num_flows = 10
  return m
