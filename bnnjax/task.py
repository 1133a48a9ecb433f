"""The contract between a model and everything else: the loop, `Run`, evaluation.

Any method runs on any network without a file per pair: `config.model.name = "<method>/<network>"`
(e.g. "mean_field/mlp") composes a declared `Method` and `Network` (bnnjax.models.compose).
A model file declares, in one place, a `Model`:

    MODEL = Model(name="bayes_mlp", default_config=default_model_config,
                  make_task=make_task, workdir_fields=("init_from", "prior_workdir"))

- `default_config()` is its config schema: every `config.model` field with its default
  (and so its type). Any other field is refused by `bnnjax.config.resolve`.
- `make_task(model_config, info, restored) -> Task` receives only its own config section,
  the `DataInfo`, and the params of the runs named by its `workdir_fields`, which the
  caller has read from disk (`restored[field]`; absent where the field is empty). It
  checks its values and builds pure functions; it reads no files.

The `Task` the loop trains holds `init`, `loss` and `evaluate`, and declares its
capabilities by the optional fields it fills: `predictor` (a classifier or regressor
predictive), `generative` (a latent-variable model: sample, importance-weighted
log-likelihood, reconstruction), `density` (an explicit density: log-prob, sample).
No caller looks for a capability by `hasattr` or by a model's name.
"""

from typing import Any, Callable, Mapping, NamedTuple, Optional, Tuple

import jax

Params = Any  # any pytree of arrays
Batch = Mapping[str, jax.Array]  # {"x": inputs, "y": labels or targets}
Metrics = Mapping[str, jax.Array]  # scalar values

CLASSIFIER, REGRESSOR = "classifier", "regressor"


class DataInfo(NamedTuple):
  """What a model may know about its data before it sees a batch."""

  input_shape: Tuple[int, ...]  # one example's "x" shape, e.g. (28, 28, 1) or (784,)
  num_classes: int  # 0 for regression / density estimation
  num_train: int  # N in the per-example ELBO: NLL + beta * KL / N
  binary: bool = False  # inputs are exactly 0 or 1 (config.data.binarize = "static")
  # JSON text: a csv / npz run's training statistics and class names (bnnjax.datasets.tabular); "" if none
  preprocessing: str = ""


class Predictor(NamedTuple):
  """A predictive over labels or targets, from K draws of the model's weights.

  kind: CLASSIFIER or REGRESSOR.
  sample(params, rng, x, num_samples) with x [B, *input_shape]:
      classifier: logits [K, B, C];
      regressor: (means [K, B], noise stds [K, B]) of K Gaussian outputs.
  K is what the method draws: a point estimate returns K = 1 whatever is asked.
  """

  kind: str
  sample: Callable


class Generative(NamedTuple):
  """A latent-variable model of x (a VAE): p(x) = ∫ p(x | z[, y]) p(z) dz.

  sample(params, rng, num, labels=None) -> Bernoulli means [num, *input_shape] of z ~ p(z).
  log_likelihood(params, rng, x, labels=None, *, k, chunk_size) -> [B] the IWAE_k lower
      bound on log p(x[| y]) (k = 1 is an ELBO estimate).
  elbo_terms(params, rng, x, labels=None) -> ([B] reconstruction log p(x | z), [B] KL or
      log q - log p), one sample of z.
  reconstruct(params, rng, x, labels=None) -> [B, *input_shape] Bernoulli means decoded
      from the code of x (the model's corruption applied first, for a denoiser).
  encode(params, x, labels=None) -> [B, latent] a point code of x.
  corrupt(rng, x) -> the corrupted input a denoiser reconstructs from; None where the
      encoder sees x itself.
  conditional: labels enter encoder and decoder (num_classes of them).
  variational: False for a deterministic autoencoder (no ELBO, no log-likelihood).
  latent_size: the dimension of z.
  """

  sample: Callable
  log_likelihood: Callable
  elbo_terms: Callable
  reconstruct: Callable
  encode: Callable
  conditional: bool
  variational: bool
  latent_size: int
  corrupt: Optional[Callable] = None


class Density(NamedTuple):
  """An explicit density of x (a normalising flow).

  log_prob(params, rng, x) -> [B] log p(x) (of a dequantised x where the model is discrete;
      rng draws the dequantisation).
  sample(params, rng, num) -> [num, *input_shape] in data space.
  discrete: x holds 8-bit values and log_prob is of dequantised data (bits/dim apply).
  """

  log_prob: Callable
  sample: Callable
  discrete: bool


class Trajectory(NamedTuple):
  """A method that learns from the optimiser's path, not only its end (SWAG, SG-MCMC).

  Its Task's params are {"weights": w, "collected": c}. The loop differentiates the loss in w
  only and steps w with `optimizer`; after each step, on device and outside the gradient,
      c = collect(c, w, step, total_steps)     (step: the number of steps taken so far)
  so that a buffer of snapshots costs per step only what `collect` writes into it.
  optimizer(total_steps) -> the optax.GradientTransformation over w, or None for
  config.optimizer's; called once before training, so it may also refuse (one-line ValueError)
  a run too short for the method.
  """

  collect: Callable
  optimizer: Optional[Callable] = None


class Task(NamedTuple):
  """Pure functions the train loop composes, and the capabilities of the trained model.

  init(rng, batch) -> params
  loss(params, rng, batch, step) -> (scalar loss to minimise, metrics)
      `step` is the global step (a traced int), for KL warm-up and the like.
  evaluate(params, rng, batch) -> metrics, each a mean over the batch; the loop
      averages them over a split weighting by batch size.
  predictor / generative / density: None where the model has no such capability.
  trajectory: None, or what the method gathers along the optimiser's path (`Trajectory`).
  """

  init: Callable[[jax.Array, Batch], Params]
  loss: Callable[[Params, jax.Array, Batch, jax.Array], Tuple[jax.Array, Metrics]]
  evaluate: Callable[[Params, jax.Array, Batch], Metrics]
  predictor: Optional[Predictor] = None
  generative: Optional[Generative] = None
  density: Optional[Density] = None
  trajectory: Optional[Trajectory] = None


def capabilities(task: Task) -> Tuple[str, ...]:
  """The names of what a task's model can do, e.g. ("classifier",) or ("generative",)."""
  names = [task.predictor.kind] if task.predictor is not None else []
  return tuple(names + [name for name in ("generative", "density") if getattr(task, name) is not None])


class Model(NamedTuple):
  """What a model file declares: its name, config schema, task builder and disk references."""

  name: str
  default_config: Callable[[], Any]  # () -> ml_collections.ConfigDict, with "name"
  make_task: Callable[..., Task]  # (model_config, info, restored) -> Task
  workdir_fields: Tuple[str, ...] = ()  # config.model fields naming another run's workdir


class Network(NamedTuple):
  """A Haiku network a method can run on: its config fields and a builder.

  build(m, info, num_outputs) -> forward, a Haiku function x [B, *input_shape] -> [B, num_outputs]
  (called inside hk.transform; num_outputs is the number of classes, or 1 for regression).
  """

  name: str
  default_config: Callable[[], Any]  # () -> dict of the network's fields with defaults
  build: Callable[..., Callable]


class Method(NamedTuple):
  """How a network's weights become a predictive (point estimate, mean-field VI, ...).

  make_task(forward, m, info, restored) -> Task, for any Network's forward.
  num_outputs(m, info) -> the width of the network it needs (a regression head of two outputs:
  bnnjax.likelihoods); None: the number of classes, or 1 for regression.
  """

  name: str
  default_config: Callable[[], Any]  # () -> dict of the method's fields with defaults
  make_task: Callable[..., Task]
  workdir_fields: Tuple[str, ...] = ()
  num_outputs: Optional[Callable[..., int]] = None
