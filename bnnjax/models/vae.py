"""Bernoulli variational autoencoder, and its conditional and denoising variants.

Generative model (Kingma & Welling, 2014):
    p(z) = N(0, I),    p(x | z[, y]) = prod_pixels Bernoulli(sigmoid(decoder(z[, y]))).
Amortised posterior:
    q(z | x[, y]) = N(mean(x[, y]), diag std(x[, y])^2).
Per example, in nats,
    ELBO = E_q[log p(x | z)] - KL(q(z | x) || p(z))       (KL in closed form),
    IWAE_k = E[log (1/k) sum_i p(x, z_i) / q(z_i | x)],   z_i ~ q  (Burda et al., 2016),
with ELBO = IWAE_1 <= IWAE_k <= IWAE_{k+1} <= log p(x).

One model family, three configs (config.model.*):
  conditional = True   -> CVAE: a one-hot label enters encoder and decoder, so p(x | z, y)
                          generates a chosen digit.
  corruption = "mask" | "gaussian" with variational = False -> denoising autoencoder:
                          encode a corrupted x~, decode the mean code, reconstruct the clean x.
  binarize_train = "dynamic" -> each step sees a fresh x ~ Bernoulli(pixel intensities).

The pieces are importable on their own (a flow posterior reuses them): `Encoder`,
`Decoder`, `sample_posterior`, `posterior_log_prob`, `prior_log_prob`,
`kl_to_prior`, `log_likelihood`, `elbo`, `log_importance_weights`, `iwae_bound`.
"""
import functools
import math
from typing import Callable, NamedTuple, Optional, Sequence

import haiku as hk
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from bnnjax import objectives
from bnnjax.distributions import bernoulli_log_prob, gaussian_kl, gaussian_log_prob
from bnnjax.task import DataInfo, Task

ACTIVATIONS = {"relu": jax.nn.relu, "tanh": jnp.tanh, "softplus": jax.nn.softplus,
               "elu": jax.nn.elu}
CORRUPTIONS = ("", "mask", "gaussian")
BINARIZE_TRAIN = ("dynamic", "none")
MIN_STD = 1e-4  # keeps log q(z|x) finite when the encoder collapses a latent


# ----------------------------------------------------------------------------- networks


def hidden_layers(hidden_sizes: Sequence[int], activation: Callable, h: jax.Array) -> jax.Array:
  for i, size in enumerate(hidden_sizes):
    h = activation(hk.Linear(size, name=f"hidden_{i}")(h))
  return h


def _with_label(h: jax.Array, y_onehot: Optional[jax.Array]) -> jax.Array:
  return h if y_onehot is None else jnp.concatenate([h, y_onehot], axis=-1)


class Encoder(hk.Module):
  """q(z | x[, y]): an MLP from a flattened image (and a one-hot label) to (mean, std)."""

  def __init__(self, hidden_sizes: Sequence[int], latent_size: int,
               activation: str = "relu", name: str = "encoder"):
    super().__init__(name=name)
    self.hidden_sizes = tuple(hidden_sizes)
    self.latent_size = latent_size
    self.activation = ACTIVATIONS[activation]

  def __call__(self, x: jax.Array, y_onehot: Optional[jax.Array] = None):
    """x [B, *event] -> mean, std, each [B, latent_size]."""
    h = _with_label(x.reshape(x.shape[0], -1), y_onehot)
    h = hidden_layers(self.hidden_sizes, self.activation, h)
    mean = hk.Linear(self.latent_size, name="mean")(h)
    # softplus rather than exp: no overflow early in training, gradient bounded.
    std = jax.nn.softplus(hk.Linear(self.latent_size, name="std")(h)) + MIN_STD
    return mean, std


class Decoder(hk.Module):
  """p(x | z[, y]): an MLP from a code (and a one-hot label) to Bernoulli logits."""

  def __init__(self, hidden_sizes: Sequence[int], event_shape: Sequence[int],
               activation: str = "relu", name: str = "decoder"):
    super().__init__(name=name)
    self.hidden_sizes = tuple(hidden_sizes)
    self.event_shape = tuple(event_shape)
    self.activation = ACTIVATIONS[activation]

  def __call__(self, z: jax.Array, y_onehot: Optional[jax.Array] = None) -> jax.Array:
    """z [B, latent] -> logits [B, *event_shape]."""
    h = hidden_layers(self.hidden_sizes, self.activation, _with_label(z, y_onehot))
    logits = hk.Linear(math.prod(self.event_shape), name="logits")(h)
    return logits.reshape(z.shape[:-1] + self.event_shape)


class Networks(NamedTuple):
  """Pure functions of the Haiku params {"encoder/...", "decoder/..."}.

  init(rng, x, y_onehot) -> params
  encode(params, x, y_onehot) -> (mean, std)
  decode(params, z, y_onehot) -> logits
  """
  init: Callable
  encode: Callable
  decode: Callable


def make_networks(model_config, event_shape: Sequence[int]) -> Networks:
  """The encoder and decoder of one config, transformed together (shared params)."""

  def build():
    encoder = Encoder(model_config.encoder_sizes, model_config.latent_size,
                      model_config.activation)
    decoder = Decoder(model_config.decoder_sizes, event_shape, model_config.activation)

    def init(x, y_onehot):
      mean, _ = encoder(x, y_onehot)
      return decoder(mean, y_onehot)

    return init, (encoder, decoder)

  transformed = hk.without_apply_rng(hk.multi_transform(build))
  encode, decode = transformed.apply
  return Networks(transformed.init, encode, decode)


# ------------------------------------------------------------------- densities and bounds


def sample_posterior(rng: jax.Array, mean: jax.Array, std: jax.Array,
                     num_samples: Optional[int] = None) -> jax.Array:
  """Reparameterised z = mean + std * eps; [num_samples, *mean.shape] if num_samples."""
  shape = mean.shape if num_samples is None else (num_samples,) + mean.shape
  return mean + std * jax.random.normal(rng, shape, mean.dtype)


def posterior_log_prob(z: jax.Array, mean: jax.Array, std: jax.Array) -> jax.Array:
  """log q(z | x), summed over the latent axis."""
  return gaussian_log_prob(z, mean, std).sum(-1)


def prior_log_prob(z: jax.Array) -> jax.Array:
  """log N(z; 0, I), summed over the latent axis."""
  return gaussian_log_prob(z, 0.0, 1.0).sum(-1)


def kl_to_prior(mean: jax.Array, std: jax.Array) -> jax.Array:
  """KL(N(mean, std^2) || N(0, I)) in closed form, summed over the latent axis."""
  return gaussian_kl(mean, std, 0.0, 1.0).sum(-1)


def log_likelihood(logits: jax.Array, x: jax.Array, event_ndim: int) -> jax.Array:
  """log p(x | z) of binary x, summed over the last `event_ndim` (pixel) axes."""
  log_p = bernoulli_log_prob(logits, x)
  return log_p.sum(axis=tuple(range(-event_ndim, 0)))


def elbo(reconstruction: jax.Array, kl: jax.Array) -> jax.Array:
  """ELBO = E_q log p(x|z) - KL(q || p), from a one-sample reconstruction term."""
  return reconstruction - kl


def log_importance_weights(log_px_given_z, log_pz, log_qz) -> jax.Array:
  """log w = log p(x | z) + log p(z) - log q(z | x)."""
  return log_px_given_z + log_pz - log_qz


def iwae_bound(log_weights: jax.Array, axis: int = 0) -> jax.Array:
  """log (1/k) sum_i w_i over `axis` of k samples: log-sum-exp, stable for any scale."""
  k = log_weights.shape[axis]
  return jax.nn.logsumexp(log_weights, axis=axis) - jnp.log(k)


# --------------------------------------------------------------------------- validation


def check_latent_size(latent_size: int) -> None:
  if not latent_size > 0:
    raise ValueError(f"config.model.latent_size must be positive, got {latent_size!r}")


def check_num_samples(k: int) -> None:
  if not (isinstance(k, (int, np.integer)) and k >= 1):
    raise ValueError(f"number of importance samples k must be an integer >= 1, got {k!r}")


def check_labels(labels, num_classes: int) -> None:
  """Concrete labels only (call before jit): one_hot would silently zero a bad label."""
  labels = np.asarray(labels)
  if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
    bad = labels[(labels < 0) | (labels >= num_classes)][0]
    raise ValueError(f"label {bad} outside the classes 0..{num_classes - 1}")


def check_binary(x) -> None:
  """A Bernoulli decoder scores x in {0, 1} only; grey levels are not a likelihood."""
  x = np.asarray(x)
  if not np.all((x == 0) | (x == 1)):
    raise ValueError("Bernoulli decoder needs binary data (0/1): binarise it "
                     "(data.binarize='static' or model.binarize_train='dynamic')")


def validate(model, info: DataInfo) -> None:
  check_latent_size(model.latent_size)
  for field in ("encoder_sizes", "decoder_sizes"):
    if any(int(size) <= 0 for size in model[field]):
      raise ValueError(f"config.model.{field} must be positive sizes, got {tuple(model[field])}")
  if model.activation not in ACTIVATIONS:
    raise ValueError(f"config.model.activation: unknown {model.activation!r}; "
                     f"choose one of {sorted(ACTIVATIONS)}")
  if model.binarize_train not in BINARIZE_TRAIN:
    raise ValueError(f"config.model.binarize_train must be one of {BINARIZE_TRAIN}, "
                     f"got {model.binarize_train!r}")
  if model.corruption not in CORRUPTIONS:
    raise ValueError(f"config.model.corruption must be one of {CORRUPTIONS}, "
                     f"got {model.corruption!r}")
  if model.corruption and not 0.0 < model.corruption_level:
    raise ValueError(f"config.model.corruption_level must be positive, got {model.corruption_level}")
  if model.corruption == "mask" and not model.corruption_level < 1.0:
    raise ValueError(f"config.model.corruption_level must be < 1 for masking, "
                     f"got {model.corruption_level}")
  if model.eval_iwae_samples < 0:
    raise ValueError(f"config.model.eval_iwae_samples must be >= 0, got {model.eval_iwae_samples}")
  if model.kl_warmup_steps < 0:
    raise ValueError(f"config.model.kl_warmup_steps must be >= 0, got {model.kl_warmup_steps}")
  if model.conditional and info.num_classes < 2:
    raise ValueError("config.model.conditional needs labelled data (num_classes >= 2), "
                     f"got num_classes={info.num_classes}")


# -------------------------------------------------------------------------------- model


class BernoulliVAE:
  """The model of one config: pure functions of (params, rng, x, y), no state.

  Labels y are int [B]; they are used only when the model is conditional.
  """

  def __init__(self, model_config, event_shape: Sequence[int], num_classes: int = 0):
    check_latent_size(model_config.latent_size)
    self.networks = make_networks(model_config, event_shape)
    self.event_shape = tuple(event_shape)
    self.latent_size = int(model_config.latent_size)
    self.num_classes = int(num_classes) if model_config.conditional else 0
    self.variational = bool(model_config.variational)
    self.corruption = model_config.corruption
    self.corruption_level = float(model_config.corruption_level)

  @property
  def conditional(self) -> bool:
    return self.num_classes > 0

  def one_hot(self, y) -> Optional[jax.Array]:
    return jax.nn.one_hot(y, self.num_classes) if self.conditional else None

  def init(self, rng: jax.Array, x: jax.Array, y=None):
    y = jnp.zeros(x.shape[:1], jnp.int32) if y is None else y
    return self.networks.init(rng, x, self.one_hot(y))

  def corrupt(self, rng: jax.Array, x: jax.Array) -> jax.Array:
    """The denoiser's input: pixels dropped to 0 ("mask") or Gaussian noise added."""
    if self.corruption == "mask":
      return x * jax.random.bernoulli(rng, 1.0 - self.corruption_level, x.shape)
    if self.corruption == "gaussian":
      return x + self.corruption_level * jax.random.normal(rng, x.shape, x.dtype)
    return x

  def elbo_terms(self, params, rng: jax.Array, x_in: jax.Array, x: jax.Array, y=None):
    """Per example (reconstruction log p(x | z), KL) with z ~ q(z | x_in).

    x_in is what the encoder sees (x, or a corrupted x); x is the target. A
    deterministic autoencoder (variational=False) decodes the mean code, KL = 0.
    """
    y_onehot = self.one_hot(y)
    mean, std = self.networks.encode(params, x_in, y_onehot)
    if self.variational:
      z, kl = sample_posterior(rng, mean, std), kl_to_prior(mean, std)
    else:
      z, kl = mean, jnp.zeros(mean.shape[:1])
    logits = self.networks.decode(params, z, y_onehot)
    return log_likelihood(logits, x, len(self.event_shape)), kl

  def log_weights(self, params, rng: jax.Array, x: jax.Array, y=None, *, k: int,
                  chunk_size: int = 100) -> jax.Array:
    """log p(x, z_i) - log q(z_i | x) for k samples z_i, [k, B].

    The decoder runs on chunks of samples (vmap inside lax.map) so that k = 1000
    never holds k x B x pixels logits at once.
    """
    check_num_samples(k)
    y_onehot = self.one_hot(y)
    mean, std = self.networks.encode(params, x, y_onehot)
    chunk_size = min(chunk_size, k)
    num_chunks = -(-k // chunk_size)
    z = sample_posterior(rng, mean, std, num_chunks * chunk_size)

    def one_sample(z_i):
      logits = self.networks.decode(params, z_i, y_onehot)
      log_px = log_likelihood(logits, x, len(self.event_shape))
      return log_importance_weights(log_px, prior_log_prob(z_i), posterior_log_prob(z_i, mean, std))

    chunks = z.reshape((num_chunks, chunk_size) + z.shape[1:])
    log_w = jax.lax.map(jax.vmap(one_sample), chunks)
    return log_w.reshape((-1,) + log_w.shape[2:])[:k]

  def iwae(self, params, rng: jax.Array, x: jax.Array, y=None, *, k: int,
           chunk_size: int = 100) -> jax.Array:
    """IWAE_k lower bound on log p(x[| y]) per example, [B]; k = 1 is an ELBO estimate."""
    return iwae_bound(self.log_weights(params, rng, x, y, k=k, chunk_size=chunk_size))

  def sample_prior_logits(self, params, rng: jax.Array, num: int, y=None) -> jax.Array:
    """Decoder logits of z ~ p(z) (given labels y [num] for the CVAE), [num, *event]."""
    if self.conditional and y is None:
      raise ValueError("a conditional VAE needs labels to generate")
    z = jax.random.normal(rng, (num, self.latent_size))
    return self.networks.decode(params, z, self.one_hot(y))

  def generate(self, params, rng: jax.Array, num: int, labels=None, *,
               binary: bool = False) -> jax.Array:
    """num images from the model: Bernoulli means in [0, 1], or binary draws.

    Labels are checked here, before jit: an out-of-range label would one-hot to zeros.
    """
    if labels is not None:
      check_labels(labels, self.num_classes if self.conditional else 0)
      labels = jnp.asarray(labels, jnp.int32)
    return self._generate(params, rng, num, labels, binary)

  @functools.partial(jax.jit, static_argnums=(0, 3, 5))
  def _generate(self, params, rng, num, labels, binary):
    z_rng, x_rng = jax.random.split(rng)
    probs = jax.nn.sigmoid(self.sample_prior_logits(params, z_rng, num, labels))
    return jax.random.bernoulli(x_rng, probs).astype(jnp.float32) if binary else probs

  def reconstruct(self, params, x_in: jax.Array, y=None) -> jax.Array:
    """Bernoulli means decoded from the posterior mean code of x_in, in [0, 1]."""
    y_onehot = self.one_hot(y)
    mean, _ = self.networks.encode(params, x_in, y_onehot)
    return jax.nn.sigmoid(self.networks.decode(params, mean, y_onehot))

  def encode_mean(self, params, x: jax.Array, y=None) -> jax.Array:
    return self.networks.encode(params, x, self.one_hot(y))[0]


# --------------------------------------------------------------------------------- task


def kl_weight(step: jax.Array, warmup_steps: int) -> jax.Array:
  """beta rises linearly from 1/warmup to 1 over the first warmup steps (0 = always 1).

  bnnjax.objectives.kl_weight counted from step 1, so the first step already sees some KL.
  """
  return jnp.asarray(objectives.kl_weight(step + 1, warmup_steps=warmup_steps), jnp.float32)


def dynamic_binarize(rng: jax.Array, x: jax.Array) -> jax.Array:
  """x ~ Bernoulli(grey level) per pixel: a fresh binary image each step (binary x stays)."""
  return jax.random.bernoulli(rng, x).astype(x.dtype)


def train_binarizer(binarize_train: str) -> Callable:
  return dynamic_binarize if binarize_train == "dynamic" else lambda rng, x: x


def make_task(config, info: DataInfo) -> Task:
  """The loop's view of the model. Metrics are means over the batch, in nats per example."""
  model_config = config.model
  validate(model_config, info)
  if model_config.binarize_train == "none" and config.data.binarize != "static":
    raise ValueError("Bernoulli decoder needs binary data: set config.data.binarize='static' "
                     "or config.model.binarize_train='dynamic'")
  model = BernoulliVAE(model_config, info.input_shape, info.num_classes)
  binarize = train_binarizer(model_config.binarize_train)
  warmup, iwae_k = int(model_config.kl_warmup_steps), int(model_config.eval_iwae_samples)

  def labels(batch):
    return batch["y"] if model.conditional else None

  def terms(params, rng, batch):
    bin_rng, noise_rng, z_rng = jax.random.split(rng, 3)
    x = binarize(bin_rng, batch["x"])
    rec, kl = model.elbo_terms(params, z_rng, model.corrupt(noise_rng, x), x, labels(batch))
    return x, rec, kl

  def init(rng, batch):
    return model.init(rng, batch["x"], labels(batch))

  def loss(params, rng, batch, step):
    _, rec, kl = terms(params, rng, batch)
    beta = kl_weight(step, warmup)
    metrics = {"reconstruction": rec.mean()}
    if model.variational:
      metrics.update(elbo=elbo(rec, kl).mean(), kl=kl.mean(), kl_weight=beta)
    return -(rec - beta * kl).mean(), metrics

  def evaluate(params, rng, batch):
    term_rng, iwae_rng = jax.random.split(rng)
    x, rec, kl = terms(params, term_rng, batch)
    metrics = {"reconstruction": rec.mean()}
    if model.variational:
      metrics.update(elbo=elbo(rec, kl).mean(), kl=kl.mean())
    if model.corruption:  # what the denoiser reconstructs from a clean input, for contrast
      clean_rec, _ = model.elbo_terms(params, term_rng, x, x, labels(batch))
      metrics["reconstruction_clean_input"] = clean_rec.mean()
    if model.variational and iwae_k > 0:
      metrics[f"log_px_iwae{iwae_k}"] = model.iwae(params, iwae_rng, x, labels(batch),
                                                   k=iwae_k).mean()
    return metrics

  return Task(init, loss, evaluate)


def default_model_config():
  """The fields make_task reads, with a plain VAE's defaults (configs/ override them)."""
  m = ml_collections.ConfigDict()
  m.name = "vae"
  m.latent_size = 50
  m.encoder_sizes = (500, 500)
  m.decoder_sizes = (500, 500)
  m.activation = "relu"
  m.variational = True  # False: deterministic autoencoder (the denoiser)
  m.conditional = False  # True: CVAE, the label enters encoder and decoder
  m.corruption = ""  # "" | "mask" | "gaussian": the encoder sees a corrupted input
  m.corruption_level = 0.0  # mask: drop probability; gaussian: noise std
  m.binarize_train = "dynamic"  # "dynamic" | "none" (then data.binarize must be "static")
  m.kl_warmup_steps = 0
  m.eval_iwae_samples = 0  # > 0: the loop's evaluation also reports log p(x) by IWAE_k
  return m
