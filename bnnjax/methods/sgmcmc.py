"""Stochastic-gradient MCMC: SGLD (Welling & Teh 2011) and SGHMC (Chen et al. 2014), with the
cyclical step size of Zhang et al. 2020 (cSG-MCMC); the diffusions are blackjax's.

The target is the posterior p(w | D) ∝ p(w) Π_i p(y_i | x_i, w) with a N(0, prior_std²) prior
on every weight. The loop minimises the per-example loss

    L(w) = − mean_i log p(y_i | x_i, w) − log p(w) / N,      so  ∇ log p(w | D) ≈ − N ∇L

on mini-batches, and the update rule (`langevin`) turns its gradient g into a sampler step.
With step size η (an SGD learning rate on L) and temperature T:

    SGLD:   w ← w − η g + sqrt(2 η T / N) ξ                                     ξ ~ N(0, I)
    SGHMC:  ε = sqrt(η / N), α = (1 − momentum) / ε  (friction per step 1 − momentum):
            w ← w + ε v;   v ← (1 − α ε) v − ε N g + sqrt(2 α ε T) ξ

T = 1 is the Bayesian posterior; T < 1 a tempered ("cold") one.
The run is cut into `num_cycles` cycles of C steps. In a cyclical schedule the step size
follows η_t = η/2 (cos(π r / C) + 1) within a cycle (r: the step's position in it); in a
constant one it stays η. The first `exploration` fraction of each cycle adds no noise (an
optimiser finding a mode; burn-in); the rest samples, and `samples_per_cycle` weights spread
evenly over its end are kept: S = num_cycles × samples_per_cycle samples, the last at each
cycle's end. The predictive is the equal-weight average over the samples kept so far (the
current weights before the first).

Method fields (`DEFAULTS`): sampler ("sgld" | "sghmc"), step_size η, momentum (SGHMC),
temperature T, prior_std, schedule ("cyclical" | "constant"), num_cycles, exploration,
samples_per_cycle, noise_std (regression likelihood), init_from
(start from a trained run's weights). config.optimizer is not used: the sampler is the update.
"""

import math
from typing import Any, Callable, NamedTuple

import haiku as hk
import jax
import jax.numpy as jnp
import optax

from bnnjax.methods import ensemble
from bnnjax.methods.common import init_from_weights, targets
from bnnjax.task import DataInfo, Method, Task, Trajectory

SAMPLERS = ("sgld", "sghmc")
SCHEDULES = ("cyclical", "constant")
DEFAULTS = dict(
  sampler="sgld",
  step_size=0.05,
  momentum=0.9,
  temperature=1.0,
  prior_std=1.0,
  schedule="cyclical",
  num_cycles=4,
  exploration=0.5,
  samples_per_cycle=3,
  noise_std=1.0,
  init_from="",
)


def validate(m) -> None:
  """One-line ValueErrors naming the bad config.model field."""
  for field, choices in (("sampler", SAMPLERS), ("schedule", SCHEDULES)):
    if m[field] not in choices:
      raise ValueError(f"config.model.{field}: unknown {m[field]!r}; choose one of {', '.join(choices)}")
  for field in ("step_size", "prior_std", "noise_std"):
    if not (math.isfinite(m[field]) and m[field] > 0):
      raise ValueError(f"config.model.{field} must be positive and finite, got {m[field]!r}")
  if not 0 <= m.temperature < math.inf:
    raise ValueError(f"config.model.temperature must be >= 0 and finite, got {m.temperature!r}")
  if not 0 <= m.momentum < 1:
    raise ValueError(f"config.model.momentum must lie in [0, 1), got {m.momentum!r}")
  if not 0 <= m.exploration < 1:
    raise ValueError(f"config.model.exploration must lie in [0, 1), got {m.exploration!r}")
  for field in ("num_cycles", "samples_per_cycle"):
    if isinstance(m[field], bool) or not isinstance(m[field], int) or m[field] < 1:
      raise ValueError(f"config.model.{field} must be an integer >= 1, got {m[field]!r}")


class Schedule(NamedTuple):
  """Where step t (0-based) of a run of `total_steps` falls: its cycle and the step size,
  temperature and sample slot that go with it."""

  cycle_length: int  # C
  sampling_start: int  # the first sampling position within a cycle
  spacing: int  # steps between two kept samples
  num_slots: int  # S


def schedule(m, total_steps: int) -> Schedule:
  """The cycle layout of a run; a one-line ValueError when a cycle cannot hold its samples."""
  length = total_steps // m.num_cycles
  start = int(m.exploration * length)
  if length - start < m.samples_per_cycle:
    raise ValueError(
      f"config.model: {total_steps} steps in num_cycles={m.num_cycles} cycles leave "
      f"{max(length - start, 0)} sampling steps per cycle, fewer than samples_per_cycle={m.samples_per_cycle}"
    )
  spacing = (length - start) // m.samples_per_cycle
  return Schedule(length, start, spacing, m.num_cycles * m.samples_per_cycle)


def step_size_and_temperature(m, layout: Schedule, t):
  """(η_t, T_t) of step t (0-based, traced)."""
  position = t % layout.cycle_length
  eta = m.step_size
  if m.schedule == "cyclical":
    eta = 0.5 * m.step_size * (jnp.cos(jnp.pi * position / layout.cycle_length) + 1.0)
  temperature = jnp.where(position >= layout.sampling_start, m.temperature, 0.0)
  return jnp.asarray(eta, jnp.float32), temperature


def sample_slot(m, layout: Schedule, steps_taken):
  """The slot in [0, S) that the weights after `steps_taken` steps fill, or -1 (not kept)."""
  t = steps_taken - 1  # the 0-based step that produced them
  cycle, position = t // layout.cycle_length, t % layout.cycle_length
  from_end = layout.cycle_length - 1 - position
  index = from_end // layout.spacing
  kept = (
    (position >= layout.sampling_start)
    & (from_end % layout.spacing == 0)
    & (index < m.samples_per_cycle)
    & (cycle < m.num_cycles)
  )
  return jnp.where(kept, cycle * m.samples_per_cycle + m.samples_per_cycle - 1 - index, -1)


class LangevinState(NamedTuple):
  rng: jax.Array
  momentum: Any  # SGHMC's v (zeros for SGLD)
  count: jax.Array  # steps taken


def langevin(m, num_train: int, total_steps: int) -> optax.GradientTransformation:
  """The sampler as an optax update rule on the gradient g of the per-example loss L."""
  # Imported here, not at the top: importing blackjax.sgmcmc starts XLA's backend, which must
  # wait for jax.distributed.initialize in a multi-process run (the registry imports this module).
  from blackjax.sgmcmc import diffusions  # pylint: disable=import-outside-toplevel

  layout = schedule(m, total_steps)
  n = float(num_train)

  def init(weights):
    zeros = jax.tree_util.tree_map(jnp.zeros_like, weights)
    return LangevinState(jax.random.PRNGKey(0x5A3C), zeros, jnp.zeros((), jnp.int32))

  def update(grads, state, weights):
    rng, key = jax.random.split(state.rng)
    eta, temperature = step_size_and_temperature(m, layout, state.count)
    log_density_grad = jax.tree_util.tree_map(lambda g: -n * g, grads)
    if m.sampler == "sgld":
      new = diffusions.overdamped_langevin()(key, weights, log_density_grad, eta / n, temperature)
      momentum = state.momentum
    else:
      eps = jnp.sqrt(eta / n)
      alpha = (1.0 - m.momentum) / jnp.maximum(eps, 1e-20)
      step = diffusions.sghmc(alpha)
      new, momentum = step(key, weights, state.momentum, log_density_grad, eps, temperature)
      # The state keeps its dtype (blackjax's step promotes a bfloat16 momentum to float32,
      # which a lax.scan carry refuses).
      momentum = jax.tree_util.tree_map(lambda v, old: v.astype(old.dtype), momentum, state.momentum)
    updates = jax.tree_util.tree_map(jnp.subtract, new, weights)
    return updates, LangevinState(rng, momentum, state.count + 1)

  return optax.GradientTransformation(init, update)


def kept_samples(collected, weights):
  """The samples [S, ...], slots not yet filled holding the current weights."""
  count = collected["count"]

  def fill(samples, w):
    filled = (jnp.arange(samples.shape[0]) < count).reshape((-1,) + (1,) * w.ndim)
    return jnp.where(filled, samples, w[None])

  return jax.tree_util.tree_map(fill, collected["samples"], weights)


def make_task(forward: Callable, m, info: DataInfo, initial_weights=None) -> Task:
  """The SG-MCMC Task of the Haiku function `forward(x) -> outputs [B, C]` ([B, 1]: regression).

  Params: {"weights": w, "collected": {"samples": [S, ...] per leaf, "count": int}}.
  """
  validate(m)
  classification = ensemble.check_outputs(info)
  net = hk.without_apply_rng(hk.transform(forward))
  noise_std, slots = float(m.noise_std), m.num_cycles * m.samples_per_cycle
  predictive = ensemble.sample_predictor(net.apply, classification, noise_std)

  def init(rng, batch):
    weights = net.init(rng, batch["x"]) if initial_weights is None else initial_weights
    samples = jax.tree_util.tree_map(lambda w: jnp.zeros((slots, *w.shape), w.dtype), weights)
    return {"weights": weights, "collected": {"samples": samples, "count": jnp.zeros((), jnp.int32)}}

  def loss(params, rng, batch, step):
    del rng, step
    w = params["weights"]
    outputs = net.apply(w, batch["x"])[None]
    y = targets(batch)
    nll = ensemble.member_nlls(outputs, y, classification, noise_std)[0]
    sq_norm = sum(jnp.sum(jnp.square(leaf)) for leaf in jax.tree_util.tree_leaves(w))
    neg_log_prior = 0.5 * sq_norm / m.prior_std**2
    return nll + neg_log_prior / info.num_train, {"nll": nll}

  def collect(collected, weights, steps_taken, total_steps):
    slot = sample_slot(m, schedule(m, total_steps), steps_taken)
    index = jnp.maximum(slot, 0)

    def write(samples, w):
      return samples.at[index].set(jnp.where(slot >= 0, w, samples[index]))

    samples = jax.tree_util.tree_map(write, collected["samples"], weights)
    return {"samples": samples, "count": jnp.where(slot >= 0, slot + 1, collected["count"])}

  def sample(params, rng, x, num_samples):
    return predictive.sample(kept_samples(params["collected"], params["weights"]), rng, x, num_samples)

  def evaluate(params, rng, batch):
    outputs = sample(params, rng, batch["x"], slots)
    if not classification:
      outputs = outputs[0][..., None]
    return ensemble.predictive_metrics(outputs, targets(batch), classification, noise_std)

  trajectory = Trajectory(collect, optimizer=lambda total: langevin(m, info.num_train, total))
  return Task(init, loss, evaluate, predictor=predictive._replace(sample=sample), trajectory=trajectory)


def method_task(forward: Callable, m, info: DataInfo, restored) -> Task:
  """SG-MCMC as a Method; m.init_from starts the chain at a trained run's weights."""
  return make_task(forward, m, info, init_from_weights(forward, m, info, restored))


METHOD = Method(
  name="sgmcmc", default_config=lambda: dict(DEFAULTS), make_task=method_task, workdir_fields=("init_from",)
)
