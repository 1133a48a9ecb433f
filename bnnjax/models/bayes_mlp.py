"""Bayesian MLP by variational inference (Bayes by Backprop, mean-field Gaussian).

A thin composition: the network is the plain Haiku MLP of `bnnjax.models.mlp`, the
method is `bnnjax.methods.mean_field` (the posterior, prior, estimator and ELBO). What
is specific to the MLP lives here: which of its layers are Bayesian, a prior per layer,
and starting the means from a trained `mlp` run.

config.model fields (the schema is `default_model_config()`):
    hidden_sizes, activation      the MLP
    layer_priors                  () for `prior` everywhere, or one name per layer,
                                  input layer first, e.g. ("gaussian", "mixture",
                                  "mixture"): each layer "gaussian" or "mixture"
    bayesian                      "all" | "last_layer"
    init_from                     "" or the workdir of a trained mlp run: its weights
                                  become the posterior means
    prior_workdir                 with prior = "posterior": the workdir of a previous
                                  bayes_mlp run, whose posterior becomes the prior
    the method's fields           see bnnjax.methods.mean_field.DEFAULTS
The caller (bnnjax.train.fit, bnnjax.load) reads the runs named by init_from and
prior_workdir and passes their params in `restored`.
"""
import jax
import jax.numpy as jnp
import ml_collections

from bnnjax import checkpoint, estimators, posterior as post, priors
from bnnjax.methods import mean_field
from bnnjax.models import mlp
from bnnjax.task import DataInfo, Model, Task

NETWORK_DEFAULTS = dict(hidden_sizes=(400, 400), activation="relu", layer_priors=(),
                        bayesian="all", init_from="", prior_workdir="")


def default_model_config() -> ml_collections.ConfigDict:
  """Every config.model field with its default: configs start from it, so any can be overridden."""
  return mean_field.default_config("bayes_mlp", **NETWORK_DEFAULTS)


def validate(m) -> None:
  """The MLP's own fields; mean_field.validate checks the method's."""
  sizes = mlp.check_hidden_sizes(m.hidden_sizes)
  mlp.activation(m.activation)
  layer_priors = tuple(m.layer_priors)
  if layer_priors:
    if len(layer_priors) != len(sizes) + 1 or not set(layer_priors) <= {"gaussian", "mixture"}:
      raise ValueError(f"config.model.layer_priors must name 'gaussian' or 'mixture' for each of "
                       f"the {len(sizes) + 1} layers, got {layer_priors}")
    if "gaussian" in layer_priors and not m.prior_scale > 0:
      raise ValueError(f"config.model.prior_scale must be positive, got {m.prior_scale!r}")
    if "mixture" in layer_priors:
      mean_field.validate_mixture(m)
  if m.prior == "posterior" and not m.prior_workdir:
    raise ValueError("config.model.prior='posterior' needs config.model.prior_workdir")
  if m.bayesian not in ("all", "last_layer"):
    raise ValueError(f"config.model.bayesian must be 'all' or 'last_layer', got {m.bayesian!r}")


def bayesian_predicate(m):
  """Which leaves are Bayesian: all, or only the output layer's."""
  if m.bayesian == "all":
    return None
  last = f"mlp/~/linear_{len(tuple(m.hidden_sizes))}"
  return lambda module_name, name, value: module_name == last


def make_prior(m, reference_posterior, restored):
  """A prior per layer, a previous run's posterior, or None (the method's own `m.prior`)."""
  if m.layer_priors:
    layers = [f"mlp/~/linear_{i}" for i in range(len(tuple(m.hidden_sizes)) + 1)]
    return priors.layerwise_prior({layer: mean_field.named_prior(kind, m) for layer, kind
                                   in zip(layers, m.layer_priors)
                                   if layer in post.scale_params(reference_posterior)})
  if m.prior == "posterior":
    return mean_field.posterior_prior(restored["prior_workdir"], reference_posterior,
                                      f"config.model.prior_workdir={m.prior_workdir!r}")
  return None


def initial_means(m, fresh_params, restored):
  """None (a fresh init), or a trained run's weights (its means if it was Bayesian), checked."""
  if not m.init_from:
    return None
  trained = restored["init_from"]
  if post.is_posterior(trained):
    trained = trained["mean"]
  checkpoint.check_compatible(trained, fresh_params, f"config.model.init_from={m.init_from!r}")
  return jax.tree_util.tree_map(lambda t, f: jnp.asarray(t, f.dtype), trained, fresh_params)


def make_task(m, info: DataInfo, restored=None) -> Task:
  """The mean-field Task of the MLP; `restored` holds the params of init_from / prior_workdir."""
  validate(m)
  mean_field.validate(m)
  restored = restored or {}
  outputs = info.num_classes if info.num_classes > 0 else 1  # regression: one output
  sizes, act = tuple(m.hidden_sizes), m.activation
  forward = lambda x: mlp.mlp(sizes, outputs, act)(x)
  # Shapes only (jax.eval_shape: nothing computed): enough to check what was restored and to
  # name the Bayesian leaves, before the loop compiles.
  predicate = bayesian_predicate(m)
  example = jax.ShapeDtypeStruct((1, *info.input_shape), jnp.float32)
  fresh = jax.eval_shape(estimators.bayesian_transform(forward, m.estimator).init,
                         jax.random.PRNGKey(0), example)
  reference = jax.eval_shape(lambda p: post.init_posterior(p, m.init_std, predicate, m.posterior_scale),
                             fresh)
  return mean_field.make_task(forward, m, info, initial_means=initial_means(m, fresh, restored),
                              prior=make_prior(m, reference, restored), predicate=predicate)


MODEL = Model(name="bayes_mlp", default_config=default_model_config, make_task=make_task,
              workdir_fields=("init_from", "prior_workdir"))
