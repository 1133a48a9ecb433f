"""Bayesian MLP by variational inference (Bayes by Backprop, mean-field Gaussian).

A thin composition: the network is the plain Haiku MLP of `bnnjax.models.mlp`, the
method is `bnnjax.methods.mean_field` (the posterior, prior, estimator and ELBO), as in
"mean_field/mlp". What is specific to the MLP lives here: which of its layers are
Bayesian and a prior per layer.

config.model fields (the schema is `default_model_config()`):
    hidden_sizes, activation      the MLP
    layer_priors                  () for `prior` everywhere, or one name per layer,
                                  input layer first, e.g. ("gaussian", "mixture",
                                  "mixture"): each layer "gaussian" or "mixture"
    bayesian                      "all" | "last_layer"
    the method's fields           see bnnjax.methods.mean_field (init_from: a trained mlp
                                  run's weights as the means; prior_workdir: a previous
                                  run's posterior as the prior)
"""

import ml_collections

from bnnjax import likelihoods, posterior as post, priors
from bnnjax.methods import mean_field
from bnnjax.models import mlp
from bnnjax.task import DataInfo, Model, Task

NETWORK_DEFAULTS = dict(hidden_sizes=(400, 400), activation="relu", layer_priors=(), bayesian="all")


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
      raise ValueError(
        f"config.model.layer_priors must name 'gaussian' or 'mixture' for each of "
        f"the {len(sizes) + 1} layers, got {layer_priors}"
      )
    if "gaussian" in layer_priors and not m.prior_scale > 0:
      raise ValueError(f"config.model.prior_scale must be positive, got {m.prior_scale!r}")
    if "mixture" in layer_priors:
      mean_field.validate_mixture(m)
  if m.bayesian not in ("all", "last_layer"):
    raise ValueError(f"config.model.bayesian must be 'all' or 'last_layer', got {m.bayesian!r}")


def bayesian_predicate(m):
  """Which leaves are Bayesian: all, or only the output layer's."""
  if m.bayesian == "all":
    return None
  last = f"mlp/~/linear_{len(tuple(m.hidden_sizes))}"
  return lambda module_name, name, value: module_name == last


def layer_prior(m):
  """reference posterior -> one prior per layer (m.layer_priors), or None for the method's."""
  if not m.layer_priors:
    return None
  layers = [f"mlp/~/linear_{i}" for i in range(len(tuple(m.hidden_sizes)) + 1)]
  return lambda reference: priors.layerwise_prior(
    {
      layer: mean_field.named_prior(kind, m)
      for layer, kind in zip(layers, m.layer_priors)
      if layer in post.scale_params(reference)
    }
  )


def make_task(m, info: DataInfo, restored=None) -> Task:
  """The mean-field Task of the MLP; `restored` holds the params of init_from / prior_workdir."""
  validate(m)
  outputs = likelihoods.num_outputs(m.likelihood, info)  # regression: mean (and std: heteroscedastic)
  return mean_field.method_task(
    mlp.build(m, info, outputs),
    m,
    info,
    restored or {},
    predicate=bayesian_predicate(m),
    prior_of=layer_prior(m),
  )


MODEL = Model(
  name="bayes_mlp",
  default_config=default_model_config,
  make_task=make_task,
  workdir_fields=mean_field.WORKDIR_FIELDS,
)
