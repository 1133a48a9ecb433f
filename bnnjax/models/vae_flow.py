"""A Bernoulli VAE whose posterior q(z | x) is a diagonal Gaussian pushed through a flow:
planar maps (`config.model.flow = "planar"`) or inverse autoregressive flow ("iaf").

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

Inverse autoregressive flow (Kingma et al., 2016, eqs. 10-14): T steps

    [m_t, s_t] = MADE_t(z_{t-1}, h),   sigma_t = sigmoid(s_t),
    z_t = sigma_t * z_{t-1} + (1 - sigma_t) * m_t,   log |det dz_t/dz_{t-1}| = sum_i log sigma_t,i,

where MADE_t is a masked network in which output i sees only z_{<i} (so the Jacobian is
triangular with diagonal sigma_t) and h, the encoder's last hidden layer, enters every
hidden unit. The variable order reverses from one step to the next. s_t starts near +1
(the paper's forget-gate bias), so each step starts close to the identity.

Everything else (decoder, Bernoulli likelihood, prior, IWAE estimator, KL warm-up, dynamic
binarisation, the Task and its Generative capability) is the plain VAE's: `FlowVAE` is a
`vae.BernoulliVAE` with another `posterior`, and `make_task` is `vae.family_task` of it.
"""

from typing import Callable, NamedTuple, Optional, Sequence, Tuple

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

from bnnjax.models import mlp, vae
from bnnjax.task import DataInfo, Model, Task


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


# ------------------------------------------------------------- inverse autoregressive flow

FLOWS = ("planar", "iaf")
IAF_GATE_BIAS = 1.0  # sigma_t starts at sigmoid(1) = 0.73: near the identity, as in the paper


def made_masks(dim: int, hidden_size: int) -> Tuple[np.ndarray, np.ndarray]:
  """MADE masks (Germain et al., 2015): input->hidden [D, H] and hidden->output [H, D].

  Inputs and outputs get degrees 1..D, hidden units degrees cycling through 1..D-1; a
  hidden unit sees inputs of degree <= its own, output i sees hidden units of degree < i,
  so output i depends on inputs 1..i-1 only.
  """
  degrees = np.arange(1, dim + 1)
  hidden_degrees = np.arange(hidden_size) % max(dim - 1, 1) + 1
  to_hidden = (hidden_degrees[None, :] >= degrees[:, None]).astype(np.float32)
  to_output = (degrees[None, :] > hidden_degrees[:, None]).astype(np.float32)
  return to_hidden, to_output


class MaskedLinear(hk.Module):
  """x @ (w * mask) + b: a dense layer with some connections cut."""

  def __init__(self, mask: np.ndarray, bias_init: float = 0.0, name=None):
    super().__init__(name=name)
    self.mask, self.bias_init = mask, bias_init

  def __call__(self, x):
    fan_in, size = self.mask.shape
    w = hk.get_parameter(
      "w", self.mask.shape, x.dtype, hk.initializers.TruncatedNormal(1.0 / np.sqrt(fan_in))
    )
    b = hk.get_parameter("b", (size,), x.dtype, hk.initializers.Constant(self.bias_init))
    return x @ (w * self.mask) + b


class IAFStep(hk.Module):
  """One IAF step z -> sigma * z + (1 - sigma) * m, and sum_i log sigma_i, see the module doc."""

  def __init__(self, hidden_size: int, reverse: bool, name=None):
    super().__init__(name=name)
    self.hidden_size, self.reverse = hidden_size, reverse

  def __call__(self, z, context):
    z = z[..., ::-1] if self.reverse else z
    to_hidden, to_output = made_masks(z.shape[-1], self.hidden_size)
    hidden = jax.nn.elu(
      MaskedLinear(to_hidden, name="hidden")(z)
      + hk.Linear(self.hidden_size, with_bias=False, name="context")(context)
    )
    m = MaskedLinear(to_output, name="m")(hidden)
    s = MaskedLinear(to_output, bias_init=IAF_GATE_BIAS, name="s")(hidden)
    sigma = jax.nn.sigmoid(s)
    z = sigma * z + (1.0 - sigma) * m
    return (z[..., ::-1] if self.reverse else z), jax.nn.log_sigmoid(s).sum(-1)


def iaf(z, context, num_steps: int, hidden_size: int):
  """z_T and sum_t log |det dz_t/dz_{t-1}| (inside hk.transform); z [..., B, D], context [B, C]."""
  log_det = jnp.zeros(z.shape[:-1])
  for t in range(num_steps):
    z, step_log_det = IAFStep(hidden_size, reverse=t % 2 == 1, name=f"iaf_{t}")(z, context)
    log_det += step_log_det
  return z, log_det


def sample_flow_posterior(rng, networks, params, mean, std, flow_inputs, num_samples: Optional[int] = None):
  """z_K ~ q_K(z | x) and log q_K(z_K | x); [num_samples, B, D] if num_samples."""
  z0 = vae.sample_posterior(rng, mean, std, num_samples)
  z, log_det = networks.flow(params, z0, flow_inputs)
  return z, vae.posterior_log_prob(z0, mean, std) - log_det


# ----------------------------------------------------------------------------- networks


class FlowEncoder(hk.Module):
  """vae.Encoder's (mean, std), plus what the flow needs from the same hidden layer:
  the K planar maps' parameters, or that hidden layer itself as IAF's context h."""

  def __init__(
    self,
    hidden_sizes: Sequence[int],
    latent_size: int,
    num_flows: int,
    activation_name: str = "relu",
    flow: str = "planar",
    name: str = "encoder",
  ):
    super().__init__(name=name)
    self.hidden_sizes = tuple(hidden_sizes)
    self.latent_size = latent_size
    self.num_flows = num_flows
    self.activation = mlp.activation(activation_name)
    self.flow = flow

  def __call__(self, x: jax.Array):
    """x [B, *event] -> mean, std [B, D] and the flow inputs (PlanarParams or h [B, H])."""
    h = vae.hidden_layers(self.hidden_sizes, self.activation, x.reshape(x.shape[0], -1))
    mean, std = vae.gaussian_head(h, self.latent_size)
    if self.flow == "iaf":
      return mean, std, h
    k, d, batch = self.num_flows, self.latent_size, x.shape[0]
    raw = hk.Linear(k * (2 * d + 1), name="planar")(h).reshape(batch, k, 2 * d + 1)
    raw = jnp.swapaxes(raw, 0, 1)  # [K, B, 2D + 1]
    return mean, std, PlanarParams(raw[..., :d], raw[..., d : 2 * d], raw[..., 2 * d :])


class Networks(NamedTuple):
  init: Callable  # (rng, x) -> params
  encode: Callable  # (params, x) -> (mean, std, flow inputs: PlanarParams or IAF context)
  decode: Callable  # (params, z) -> logits
  flow: Callable  # (params, z0, flow inputs) -> (z_K, sum of log |det|)


def make_networks(model_config, event_shape: Sequence[int]) -> Networks:
  """Encoder, decoder and flow of one config (config.model), transformed together."""
  kind = model_config.flow

  def build():
    encoder = FlowEncoder(
      model_config.encoder_sizes,
      model_config.latent_size,
      model_config.num_flows,
      model_config.activation,
      kind,
    )
    decoder = vae.Decoder(model_config.decoder_sizes, event_shape, model_config.activation)

    def flow(z0, flow_inputs):
      if kind == "planar":
        return planar_flow(z0, flow_inputs)
      return iaf(z0, flow_inputs, model_config.num_flows, model_config.iaf_hidden_size)

    def init(x):
      mean, _, flow_inputs = encoder(x)
      z, _ = flow(mean, flow_inputs)
      return decoder(z)

    return init, (encoder, decoder, flow)

  transformed = hk.without_apply_rng(hk.multi_transform(build))
  encode, decode, flow = transformed.apply
  return Networks(transformed.init, encode, decode, flow)


# --------------------------------------------------------------------------------- model


class FlowVAE(vae.BernoulliVAE):
  """The plain VAE with q(z | x) a flow of the base Gaussian: unconditional, variational,
  no corruption. Everything but the posterior (and the ELBO's KL, now log q - log p from
  the sample) is vae.BernoulliVAE's."""

  def __init__(self, model_config, event_shape: Sequence[int]):  # pylint: disable=super-init-not-called
    vae.check_latent_size(model_config.latent_size)
    self.networks = make_networks(model_config, event_shape)
    self.event_shape = tuple(event_shape)
    self.latent_size = int(model_config.latent_size)
    self.num_classes, self.variational, self.corruption, self.corruption_level = 0, True, "", 0.0

  def init(self, rng: jax.Array, x: jax.Array, y=None):
    del y
    return self.networks.init(rng, x)

  def loss_keys(self, rng: jax.Array):
    """(binarisation, no corruption, z) keys: two streams, as the flow VAE has always drawn."""
    bin_rng, z_rng = jax.random.split(rng)
    return bin_rng, None, z_rng

  def decode(self, params, z: jax.Array, y_onehot) -> jax.Array:
    del y_onehot
    return self.networks.decode(params, z)

  def posterior(self, params, rng: jax.Array, x: jax.Array, y_onehot, num_samples: Optional[int] = None):
    """(z_K, log q_K(z_K | x)) of num_samples draws: [num_samples, B, D] and [num_samples, B]."""
    del y_onehot
    mean, std, flow_inputs = self.networks.encode(params, x)
    return sample_flow_posterior(rng, self.networks, params, mean, std, flow_inputs, num_samples)

  def point_code(self, params, x: jax.Array, y_onehot) -> jax.Array:
    """The flow applied to the base posterior's mean: a point code for pictures, not E_q[z]."""
    del y_onehot
    mean, _, flow_inputs = self.networks.encode(params, x)
    return self.networks.flow(params, mean, flow_inputs)[0]

  def elbo_terms(self, params, rng: jax.Array, x_in: jax.Array, x: jax.Array, y=None):
    """Per example (log p(x | z_K), log q_K(z_K | x_in) - log p(z_K)) from one sample z_K."""
    z, log_q = self.posterior(params, rng, x_in, None)
    log_px = vae.log_likelihood(self.decode(params, z, None), x, len(self.event_shape))
    return log_px, log_q - vae.prior_log_prob(z)


# --------------------------------------------------------------------------------- task


def validate(m, info: DataInfo) -> None:
  """The plain VAE's checks (vae.validate), then the flow's fields."""
  vae.validate(m, info)
  if not m.num_flows >= 1:
    raise ValueError(f"config.model.num_flows must be >= 1 (use model 'vae' for none), got {m.num_flows}")
  if m.flow not in FLOWS:
    raise ValueError(f"config.model.flow: unknown flow {m.flow!r}; choose one of {', '.join(FLOWS)}")
  if m.flow == "iaf" and not m.iaf_hidden_size >= 1:
    raise ValueError(f"config.model.iaf_hidden_size must be >= 1, got {m.iaf_hidden_size}")
  if m.conditional or m.corruption or not m.variational:
    raise ValueError(
      "the flow posterior supports the plain VAE only: set config.model.conditional=False, "
      "corruption='' and variational=True"
    )


def make_task(m, info: DataInfo, restored=None) -> Task:
  """The plain VAE's task (vae.family_task) with q(z | x) a flow posterior. Nats per example."""
  del restored
  validate(m, info)
  return vae.family_task(FlowVAE(m, info.input_shape), m, info)


def default_model_config():
  """The plain VAE's fields plus the flow: its kind, its number of maps, IAF's MADE width."""
  m = vae.default_model_config()
  m.name = "vae_flow"
  m.flow = "planar"  # "planar" | "iaf"
  m.num_flows = 10
  m.iaf_hidden_size = 320
  return m


MODEL = Model(name="vae_flow", default_config=default_model_config, make_task=make_task)
