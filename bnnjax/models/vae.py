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

The family shares one Task builder (`family_task`) and one IWAE estimator
(`chunked_log_weights`): a model of the family (`BernoulliVAE`, or `vae_flow.FlowVAE`)
only says how it draws z and log q(z | x) (`posterior`), decodes, and scores one sample.
The pieces are importable on their own: `Encoder`, `Decoder`, `sample_posterior`,
`posterior_log_prob`, `prior_log_prob`, `kl_to_prior`, `log_likelihood`, `elbo`,
`log_importance_weights`, `iwae_bound`.
"""

import functools
import math
from typing import Callable, NamedTuple, Optional, Sequence, Tuple

import haiku as hk
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from bnnjax import objectives
from bnnjax.distributions import bernoulli_log_prob, gaussian_kl, gaussian_log_prob
from bnnjax.models.mlp import activation
from bnnjax.predictive import check_num_samples
from bnnjax.task import DataInfo, Generative, Model, Task

CORRUPTIONS = ("", "mask", "gaussian")
BINARIZE_TRAIN = ("dynamic", "none")
MIN_STD = 1e-4  # keeps log q(z|x) finite when the encoder collapses a latent


# ----------------------------------------------------------------------------- networks


def hidden_layers(hidden_sizes: Sequence[int], activation_fn: Callable, h: jax.Array) -> jax.Array:
  """h [B, F] through Linear + activation layers named hidden_0, hidden_1, ..."""
  for i, size in enumerate(hidden_sizes):
    h = activation_fn(hk.Linear(size, name=f"hidden_{i}")(h))
  return h


def _with_label(h: jax.Array, y_onehot: Optional[jax.Array]) -> jax.Array:
  return h if y_onehot is None else jnp.concatenate([h, y_onehot], axis=-1)


def gaussian_head(h: jax.Array, latent_size: int) -> Tuple[jax.Array, jax.Array]:
  """(mean, std) [B, latent_size] of q(z | x) from the encoder's last hidden layer h [B, H]."""
  mean = hk.Linear(latent_size, name="mean")(h)
  # softplus rather than exp: no overflow early in training, gradient bounded.
  std = jax.nn.softplus(hk.Linear(latent_size, name="std")(h)) + MIN_STD
  return mean, std


class Encoder(hk.Module):
  """q(z | x[, y]): an MLP from a flattened image (and a one-hot label) to (mean, std)."""

  def __init__(
    self, hidden_sizes: Sequence[int], latent_size: int, activation_name: str = "relu", name: str = "encoder"
  ):
    super().__init__(name=name)
    self.hidden_sizes = tuple(hidden_sizes)
    self.latent_size = latent_size
    self.activation = activation(activation_name)

  def __call__(self, x: jax.Array, y_onehot: Optional[jax.Array] = None):
    """x [B, *event] -> mean, std, each [B, latent_size]."""
    h = _with_label(x.reshape(x.shape[0], -1), y_onehot)
    return gaussian_head(hidden_layers(self.hidden_sizes, self.activation, h), self.latent_size)


class Decoder(hk.Module):
  """p(x | z[, y]): an MLP from a code (and a one-hot label) to Bernoulli logits."""

  def __init__(
    self,
    hidden_sizes: Sequence[int],
    event_shape: Sequence[int],
    activation_name: str = "relu",
    name: str = "decoder",
  ):
    super().__init__(name=name)
    self.hidden_sizes = tuple(hidden_sizes)
    self.event_shape = tuple(event_shape)
    self.activation = activation(activation_name)

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
    encoder = Encoder(model_config.encoder_sizes, model_config.latent_size, model_config.activation)
    decoder = Decoder(model_config.decoder_sizes, event_shape, model_config.activation)

    def init(x, y_onehot):
      mean, _ = encoder(x, y_onehot)
      return decoder(mean, y_onehot)

    return init, (encoder, decoder)

  transformed = hk.without_apply_rng(hk.multi_transform(build))
  encode, decode = transformed.apply
  return Networks(transformed.init, encode, decode)


# ------------------------------------------------------------------- densities and bounds


def sample_posterior(
  rng: jax.Array, mean: jax.Array, std: jax.Array, num_samples: Optional[int] = None
) -> jax.Array:
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


def chunked_log_weights(
  draw: Callable, log_px_given_z: Callable, *, k: int, chunk_size: int = 100
) -> jax.Array:
  """log p(x, z_i) - log q(z_i | x) for k posterior samples z_i, [k, B]: THE IWAE estimator.

  Args:
    draw: num -> (z [num, B, D], log q(z | x) [num, B]), the posterior's samples.
    log_px_given_z: z [B, D] -> log p(x | z) [B].
    k: samples per example (a Python int >= 1).
    chunk_size: samples decoded at once; the decoder runs on chunks (vmap inside
      lax.map), so k = 1000 never holds k x B x pixels logits at once.
  """
  check_num_samples(k)
  if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
    raise ValueError(f"chunk_size must be an integer >= 1, got {chunk_size!r}")
  chunk_size = min(chunk_size, k)
  num_chunks = -(-k // chunk_size)
  z, log_q = draw(num_chunks * chunk_size)

  def one_sample(z_i, log_q_i):
    return log_importance_weights(log_px_given_z(z_i), prior_log_prob(z_i), log_q_i)

  chunked = lambda a: a.reshape((num_chunks, chunk_size) + a.shape[1:])
  log_w = jax.lax.map(lambda args: jax.vmap(one_sample)(*args), (chunked(z), chunked(log_q)))
  return log_w.reshape((-1,) + log_w.shape[2:])[:k]


# --------------------------------------------------------------------------- validation


def check_latent_size(latent_size: int) -> None:
  if not latent_size > 0:
    raise ValueError(f"config.model.latent_size must be positive, got {latent_size!r}")


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
    raise ValueError(
      "Bernoulli decoder needs binary data (0/1): binarise it "
      "(data.binarize='static' or model.binarize_train='dynamic')"
    )


def check_binary_inputs(m, info: DataInfo) -> None:
  """Without dynamic binarisation the loss sees the data as they are: they must be 0/1."""
  if m.binarize_train == "none" and not info.binary:
    raise ValueError(
      "Bernoulli decoder needs binary data: set config.data.binarize='static' "
      "or config.model.binarize_train='dynamic'"
    )


def validate(m, info: DataInfo) -> None:
  """One-line ValueErrors for the fields of the VAE family (`m` is config.model)."""
  check_latent_size(m.latent_size)
  for field in ("encoder_sizes", "decoder_sizes"):
    if any(int(size) <= 0 for size in m[field]):
      raise ValueError(f"config.model.{field} must be positive sizes, got {tuple(m[field])}")
  activation(m.activation)
  if m.binarize_train not in BINARIZE_TRAIN:
    raise ValueError(f"config.model.binarize_train must be one of {BINARIZE_TRAIN}, got {m.binarize_train!r}")
  if m.corruption not in CORRUPTIONS:
    raise ValueError(f"config.model.corruption must be one of {CORRUPTIONS}, got {m.corruption!r}")
  if m.corruption and not 0.0 < m.corruption_level:
    raise ValueError(f"config.model.corruption_level must be positive, got {m.corruption_level}")
  if m.corruption == "mask" and not m.corruption_level < 1.0:
    raise ValueError(f"config.model.corruption_level must be < 1 for masking, got {m.corruption_level}")
  if m.eval_iwae_samples < 0:
    raise ValueError(f"config.model.eval_iwae_samples must be >= 0, got {m.eval_iwae_samples}")
  if m.kl_warmup_steps < 0:
    raise ValueError(f"config.model.kl_warmup_steps must be >= 0, got {m.kl_warmup_steps}")
  if m.conditional and info.num_classes < 2:
    raise ValueError(
      f"config.model.conditional needs labelled data (num_classes >= 2), got num_classes={info.num_classes}"
    )
  check_binary_inputs(m, info)


# -------------------------------------------------------------------------------- model


class BernoulliVAE:
  """The model of one config: pure functions of (params, rng, x, y), no state.

  Labels y are int [B]; they are used only when the model is conditional. A subclass
  with another posterior (vae_flow.FlowVAE) overrides `init`, `decode`, `posterior`,
  `point_code`, `elbo_terms` and `loss_keys`; the IWAE bound, sampling, reconstruction
  and the Task are shared.
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
    """[B, num_classes] one-hot labels for a conditional model, else None (y ignored)."""
    if not self.conditional:
      return None
    if y is None:
      raise ValueError("a conditional VAE needs labels")
    return jax.nn.one_hot(y, self.num_classes)

  def init(self, rng: jax.Array, x: jax.Array, y=None):
    y = jnp.zeros(x.shape[:1], jnp.int32) if y is None else y
    return self.networks.init(rng, x, self.one_hot(y))

  def loss_keys(self, rng: jax.Array):
    """(binarisation, corruption, z) keys of one loss evaluation."""
    return tuple(jax.random.split(rng, 3))

  def corrupt(self, rng: jax.Array, x: jax.Array) -> jax.Array:
    """The denoiser's input: pixels dropped to 0 ("mask") or Gaussian noise added."""
    if self.corruption == "mask":
      return x * jax.random.bernoulli(rng, 1.0 - self.corruption_level, x.shape)
    if self.corruption == "gaussian":
      return x + self.corruption_level * jax.random.normal(rng, x.shape, x.dtype)
    return x

  def decode(self, params, z: jax.Array, y_onehot) -> jax.Array:
    """Bernoulli logits [..., B, *event_shape] of codes z [..., B, latent]."""
    return self.networks.decode(params, z, y_onehot)

  def posterior(self, params, rng: jax.Array, x: jax.Array, y_onehot, num_samples: Optional[int] = None):
    """(z, log q(z | x)) of num_samples draws: [num_samples, B, D] and [num_samples, B]."""
    mean, std = self.networks.encode(params, x, y_onehot)
    z = sample_posterior(rng, mean, std, num_samples)
    return z, posterior_log_prob(z, mean, std)

  def point_code(self, params, x: jax.Array, y_onehot) -> jax.Array:
    """A code [B, latent] of x for pictures and reconstructions: the posterior mean."""
    return self.networks.encode(params, x, y_onehot)[0]

  def elbo_terms(self, params, rng: jax.Array, x_in: jax.Array, x: jax.Array, y=None):
    """Per example (reconstruction log p(x | z), KL) with z ~ q(z | x_in), each [B].

    x_in is what the encoder sees (x, or a corrupted x); x is the target. A
    deterministic autoencoder (variational=False) decodes the mean code, KL = 0.
    """
    y_onehot = self.one_hot(y)
    mean, std = self.networks.encode(params, x_in, y_onehot)
    if self.variational:
      z, kl = sample_posterior(rng, mean, std), kl_to_prior(mean, std)
    else:
      z, kl = mean, jnp.zeros(mean.shape[:1])
    return log_likelihood(self.decode(params, z, y_onehot), x, len(self.event_shape)), kl

  def log_weights(
    self, params, rng: jax.Array, x: jax.Array, y=None, *, k: int, chunk_size: int = 100
  ) -> jax.Array:
    """log p(x, z_i) - log q(z_i | x) for k samples z_i ~ q(z | x), [k, B]."""
    y_onehot = self.one_hot(y)
    return chunked_log_weights(
      lambda num: self.posterior(params, rng, x, y_onehot, num),
      lambda z: log_likelihood(self.decode(params, z, y_onehot), x, len(self.event_shape)),
      k=k,
      chunk_size=chunk_size,
    )

  def iwae(self, params, rng: jax.Array, x: jax.Array, y=None, *, k: int, chunk_size: int = 100) -> jax.Array:
    """IWAE_k lower bound on log p(x[| y]) per example, [B]; k = 1 is an ELBO estimate."""
    return iwae_bound(self.log_weights(params, rng, x, y, k=k, chunk_size=chunk_size))

  def sample_prior_logits(self, params, rng: jax.Array, num: int, y=None) -> jax.Array:
    """Decoder logits of z ~ p(z) (given labels y [num] for the CVAE), [num, *event]."""
    if self.conditional and y is None:
      raise ValueError("a conditional VAE needs labels to generate")
    z = jax.random.normal(rng, (num, self.latent_size))
    return self.decode(params, z, self.one_hot(y))

  def generate(self, params, rng: jax.Array, num: int, labels=None, *, binary: bool = False) -> jax.Array:
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
    """Bernoulli means in [0, 1] decoded from the point code of x_in, [B, *event]."""
    y_onehot = self.one_hot(y)
    return jax.nn.sigmoid(self.decode(params, self.point_code(params, x_in, y_onehot), y_onehot))

  def encode_mean(self, params, x: jax.Array, y=None) -> jax.Array:
    """The point code [B, latent] of x (see `point_code`)."""
    return self.point_code(params, x, self.one_hot(y))


# --------------------------------------------------------------------------------- task


def dynamic_binarize(rng: jax.Array, x: jax.Array) -> jax.Array:
  """x ~ Bernoulli(grey level) per pixel: a fresh binary image each step (binary x stays)."""
  return jax.random.bernoulli(rng, x).astype(x.dtype)


def train_binarizer(binarize_train: str) -> Callable:
  return dynamic_binarize if binarize_train == "dynamic" else lambda rng, x: x


def generative_of(model: BernoulliVAE) -> Generative:
  """The model's Generative capability (see bnnjax.task.Generative); its functions jit.

  elbo_terms scores the clean x; reconstruct applies the model's corruption first (with
  rng), as the denoiser is trained. A deterministic autoencoder has no prior to sample
  and no log-likelihood: those raise a one-line ValueError.
  """

  def checked(labels, action):
    """Labels of a conditional model, range-checked where concrete (outside jit)."""
    if not model.variational:
      raise ValueError(
        f"{action} needs a variational model; this is a deterministic "
        "autoencoder (config.model.variational=False)"
      )
    if model.conditional and labels is not None and not isinstance(labels, jax.core.Tracer):
      check_labels(labels, model.num_classes)
    return labels

  @functools.partial(jax.jit, static_argnames=("k", "chunk_size"))
  def iwae(params, rng, x, labels, *, k, chunk_size):
    return model.iwae(params, rng, x, labels, k=k, chunk_size=chunk_size)

  def sample(params, rng, num, labels=None):
    return model.generate(params, rng, num, checked(labels, "sample"))

  def log_likelihood(params, rng, x, labels=None, *, k, chunk_size=100):
    check_num_samples(k)
    return iwae(params, rng, x, checked(labels, "log_likelihood"), k=k, chunk_size=chunk_size)

  def elbo_terms(params, rng, x, labels=None):
    return model.elbo_terms(params, rng, x, x, labels)

  def reconstruct(params, rng, x, labels=None):
    return model.reconstruct(params, model.corrupt(rng, x), labels)

  return Generative(
    sample=sample,
    log_likelihood=log_likelihood,
    elbo_terms=elbo_terms,
    reconstruct=reconstruct,
    encode=model.encode_mean,
    conditional=model.conditional,
    variational=model.variational,
    latent_size=model.latent_size,
    corrupt=model.corrupt if model.corruption else None,
  )


def family_task(model: BernoulliVAE, m, info: DataInfo) -> Task:
  """The loop's view of a model of the VAE family. Metrics are means over the batch, in nats
  per example; `m` is config.model (binarize_train, kl_warmup_steps, eval_iwae_samples).

  The KL weight is bnnjax.objectives.kl_weight of the step being taken (step + 1), so the
  first step of a warm-up already sees 1 / kl_warmup_steps of the KL.
  """
  binarize = train_binarizer(m.binarize_train)
  warmup, iwae_k = int(m.kl_warmup_steps), int(m.eval_iwae_samples)

  def labels(batch):
    return batch["y"] if model.conditional else None

  def terms(params, rng, batch):
    bin_rng, noise_rng, z_rng = model.loss_keys(rng)
    x = binarize(bin_rng, batch["x"])
    rec, kl = model.elbo_terms(params, z_rng, model.corrupt(noise_rng, x), x, labels(batch))
    return x, rec, kl

  def init(rng, batch):
    return model.init(rng, batch["x"], labels(batch))

  def loss(params, rng, batch, step):
    _, rec, kl = terms(params, rng, batch)
    beta = jnp.asarray(objectives.kl_weight(step + 1, warmup_steps=warmup), jnp.float32)
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
      metrics[f"log_px_iwae{iwae_k}"] = model.iwae(params, iwae_rng, x, labels(batch), k=iwae_k).mean()
    return metrics

  return Task(init, loss, evaluate, generative=generative_of(model))


def make_task(m, info: DataInfo, restored=None) -> Task:
  """The Task of the VAE `m` (config.model) on data `info`; it restores nothing."""
  del restored
  validate(m, info)
  return family_task(BernoulliVAE(m, info.input_shape, info.num_classes), m, info)


def default_model_config() -> ml_collections.ConfigDict:
  """Every config.model field with a plain VAE's default (configs/ override them)."""
  m = ml_collections.ConfigDict()
  m.name = "vae"
  m.latent_size = 50
  m.encoder_sizes = (500, 500)
  m.decoder_sizes = (500, 500)
  m.activation = "relu"  # a name in bnnjax.models.mlp.ACTIVATIONS
  m.variational = True  # False: deterministic autoencoder (the denoiser)
  m.conditional = False  # True: CVAE, the label enters encoder and decoder
  m.corruption = ""  # "" | "mask" | "gaussian": the encoder sees a corrupted input
  m.corruption_level = 0.0  # mask: drop probability; gaussian: noise std
  m.binarize_train = "dynamic"  # "dynamic" | "none" (then data.binarize must be "static")
  m.kl_warmup_steps = 0
  m.eval_iwae_samples = 0  # > 0: the loop's evaluation also reports log p(x) by IWAE_k
  return m


MODEL = Model(name="vae", default_config=default_model_config, make_task=make_task)
