"""Bayesian MLP by variational inference (Bayes by Backprop, mean-field Gaussian).

The network is the plain Haiku MLP of `bnnjax.models.mlp`; its weights get the
mean-field posterior of `bnnjax.posterior`, a prior from `bnnjax.priors`, a Monte
Carlo estimator from `bnnjax.estimators` and the ELBO of `bnnjax.objectives`:

    loss = E_q[-log p(y | x, w)] + kl_weight * KL(q || p) / N     (per example)

The params the loop optimises and checkpoints are the posterior pytree
{"mean": haiku params, "rho" or "log_std": haiku params of the Bayesian leaves}; for
regression with learned noise, "mean" also holds {"likelihood": {"log_noise_std": scalar}}.

For evaluation code:
    predict_samples(params, rng, x, num_samples, config, info)
        classification: logits [K, B, C]; regression: predicted means [K, B].
        K independent posterior draws, through jax.vmap, with config.model.estimator
        (every estimator samples the same predictive; "local" is the cheapest).
    noise_std(params, config): the regression likelihood's std (fixed or learned).

config.model fields (defaults in `DEFAULTS`):
    hidden_sizes, activation      the MLP
    estimator                     "reparam" | "local" | "flipout"
    num_samples                   K Monte Carlo samples per training step
    eval_samples                  K for `evaluate`
    prior                         "gaussian" (prior_scale) | "mixture" (mixture_pi,
                                  mixture_scale1, mixture_scale2, mixture_kl:
                                  "mc" unbiased or "bound" closed form) | "posterior"
                                  (prior_workdir: a previous bayes_mlp run)
    layer_priors                  () for `prior` everywhere, or one name per layer,
                                  input layer first, e.g. ("gaussian", "mixture",
                                  "mixture"): each layer "gaussian" or "mixture"
    init_std                      initial posterior std
    posterior_scale               "softplus" (std = softplus(rho)) | "log_std" (std =
                                  exp(log_std): the same fit, a faster step)
    bayesian                      "all" | "last_layer"
    init_from                     "" or a workdir of a deterministic mlp run: its
                                  weights become the posterior means
    kl_beta, kl_warmup_steps, temperature    see bnnjax.objectives.kl_weight
    noise_std, learn_noise        regression likelihood N(y; f(x), noise_std^2)
"""
import math

import jax
import jax.numpy as jnp
import ml_collections

from bnnjax import estimators, objectives, posterior as post, priors
from bnnjax.models import mlp
from bnnjax.predictive import central_interval, check_num_samples, regression_predictive
from bnnjax.task import DataInfo, Task

DEFAULTS = dict(
    hidden_sizes=(400, 400), activation="relu", estimator="local", num_samples=1,
    eval_samples=16, prior="gaussian", prior_scale=1.0, mixture_pi=0.5, mixture_scale1=1.0,
    mixture_scale2=math.exp(-6), mixture_kl="mc", layer_priors=(), prior_workdir="",
    init_std=1e-2, posterior_scale="softplus", bayesian="all", init_from="", kl_beta=1.0,
    kl_warmup_steps=0, temperature=1.0, noise_std=1.0, learn_noise=False)


def default_model_config() -> ml_collections.ConfigDict:
  """Every config.model field with its default: configs start from it, so any can be overridden."""
  return ml_collections.ConfigDict({"name": "bayes_mlp", **DEFAULTS})


def model_config(config) -> ml_collections.ConfigDict:
  """config.model with every field of DEFAULTS present; an unknown field is a typo, an error."""
  unknown = sorted(set(config.model) - set(DEFAULTS) - {"name"})
  if unknown:
    raise ValueError(f"config.model has unknown field(s) {unknown} for bayes_mlp; "
                     f"known: {', '.join(sorted(DEFAULTS))}")
  merged = ml_collections.ConfigDict(DEFAULTS)
  merged.update(config.model)
  return merged


def validate(m: ml_collections.ConfigDict) -> None:
  """One-line ValueErrors naming the bad config.model field, before anything compiles."""
  def positive(field):
    if not m[field] > 0:
      raise ValueError(f"config.model.{field} must be positive, got {m[field]!r}")
  sizes = tuple(m.hidden_sizes)
  if not all(isinstance(s, int) and s > 0 for s in sizes):
    raise ValueError(f"config.model.hidden_sizes must be positive integers, got {sizes}")
  mlp.activation(m.activation)
  if m.estimator not in estimators.ESTIMATORS:
    raise ValueError(f"config.model.estimator: unknown estimator {m.estimator!r}; "
                     f"choose one of {', '.join(estimators.ESTIMATORS)}")
  for field in ("num_samples", "eval_samples"):
    try:
      check_num_samples(m[field])
    except ValueError:
      raise ValueError(f"config.model.{field} (K) must be an integer >= 1, got {m[field]!r}") from None
  for field in ("init_std", "temperature", "noise_std"):
    positive(field)
  if m.prior not in priors.PRIORS:
    raise ValueError(f"config.model.prior: unknown prior {m.prior!r}; "
                     f"choose one of {', '.join(priors.PRIORS)}")
  layer_priors = tuple(m.layer_priors)
  if layer_priors and (len(layer_priors) != len(sizes) + 1
                       or not set(layer_priors) <= {"gaussian", "mixture"}):
    raise ValueError(f"config.model.layer_priors must name 'gaussian' or 'mixture' for each of "
                     f"the {len(sizes) + 1} layers, got {layer_priors}")
  used = set(layer_priors) or {m.prior}
  if "gaussian" in used:
    positive("prior_scale")
  if "mixture" in used:
    if not 0 < m.mixture_pi < 1:
      raise ValueError(f"config.model.mixture_pi must lie in (0, 1), got {m.mixture_pi!r}")
    positive("mixture_scale1")
    positive("mixture_scale2")
    if m.mixture_kl not in priors.MIXTURE_KL:
      raise ValueError(f"config.model.mixture_kl must be one of {', '.join(priors.MIXTURE_KL)}, "
                       f"got {m.mixture_kl!r}")
  if m.prior == "posterior" and not m.prior_workdir:
    raise ValueError("config.model.prior='posterior' needs config.model.prior_workdir")
  if m.posterior_scale not in post.SCALE_KEYS:
    raise ValueError(f"config.model.posterior_scale must be one of {', '.join(post.SCALE_KEYS)}, "
                     f"got {m.posterior_scale!r}")
  if m.bayesian not in ("all", "last_layer"):
    raise ValueError(f"config.model.bayesian must be 'all' or 'last_layer', got {m.bayesian!r}")
  if m.kl_beta < 0 or m.kl_warmup_steps < 0:
    raise ValueError("config.model.kl_beta and config.model.kl_warmup_steps must be >= 0")


def _num_outputs(info: DataInfo) -> int:
  return info.num_classes if info.num_classes > 0 else 1  # regression: one output


def network(m, info: DataInfo):
  """The Bayesian transform of the plain MLP under the configured estimator."""
  sizes, act, outputs = tuple(m.hidden_sizes), m.activation, _num_outputs(info)
  forward = lambda x: mlp.mlp(sizes, outputs, act)(x)
  return estimators.bayesian_transform(forward, m.estimator)


def bayesian_predicate(m):
  """Which leaves are Bayesian: all, or only the output layer's."""
  if m.bayesian == "all":
    return None
  last = f"mlp/~/linear_{len(tuple(m.hidden_sizes))}"
  return lambda module_name, name, value: module_name == last


def make_prior(m, reference_posterior):
  """The prior object; a posterior prior is restored and checked against our architecture."""
  if m.layer_priors:
    layers = [f"mlp/~/linear_{i}" for i in range(len(tuple(m.hidden_sizes)) + 1)]
    return priors.layerwise_prior({layer: _named_prior(kind, m) for layer, kind
                                   in zip(layers, m.layer_priors)
                                   if layer in post.scale_params(reference_posterior)})
  if m.prior in ("gaussian", "mixture"):
    return _named_prior(m.prior, m)
  from bnnjax import checkpoint  # pylint: disable=import-outside-toplevel
  previous, _ = checkpoint.restore_params(m.prior_workdir)
  if not post.is_posterior(previous):
    raise ValueError(f"config.model.prior_workdir={m.prior_workdir!r} holds no Bayesian "
                     "posterior (no 'mean' and 'rho' or 'log_std' params)")
  key = post.scale_key(previous)
  previous = jax.tree_util.tree_map(jnp.asarray, {"mean": previous["mean"], key: previous[key]})
  post.check_same_architecture(reference_posterior, previous)
  return priors.PosteriorPrior(previous)


def _named_prior(kind, m):
  if kind == "gaussian":
    return priors.gaussian_prior(m.prior_scale)
  return priors.scale_mixture_prior(m.mixture_pi, m.mixture_scale1, m.mixture_scale2,
                                    m.mixture_kl)


def initial_means(m, fresh_params):
  """Fresh Haiku params, or a deterministic run's trained weights (shapes checked)."""
  if not m.init_from:
    return fresh_params
  from bnnjax import checkpoint  # pylint: disable=import-outside-toplevel
  trained, _ = checkpoint.restore_params(m.init_from)
  if post.is_posterior(trained):
    trained = trained["mean"]
  checkpoint.check_compatible(trained, fresh_params, f"config.model.init_from={m.init_from!r}")
  return jax.tree_util.tree_map(lambda t, f: jnp.asarray(t, f.dtype), trained, fresh_params)


def noise_std(params, config):
  """The regression likelihood's std: learned (in params) or config.model.noise_std."""
  m = model_config(config)
  if m.learn_noise:
    return jnp.exp(params["mean"]["likelihood"]["log_noise_std"])
  return jnp.asarray(m.noise_std, jnp.float32)


def predict_samples(params, rng, x, num_samples, config, info):
  """K sampled outputs: logits [K, B, C] (classification) or means [K, B] (regression)."""
  m = model_config(config)
  out = estimators.sample_outputs(network(m, info), params, rng, x, check_num_samples(num_samples))
  return out if info.num_classes > 0 else out[..., 0]


def make_task(config, info: DataInfo) -> Task:
  m = model_config(config)
  validate(m)
  if info.num_train < 1:
    raise ValueError(f"DataInfo.num_train must be >= 1 for the ELBO's KL / N, got {info.num_train}")
  classification = info.num_classes > 0
  if classification and info.num_classes < 2:
    raise ValueError(f"classification needs >= 2 classes, got {info.num_classes}")
  net = network(m, info)
  # Everything restored or checked here runs eagerly, before the loop compiles.
  fresh = net.init(jax.random.PRNGKey(0), jnp.zeros((1, *info.input_shape), jnp.float32))
  means = initial_means(m, fresh)
  predicate = bayesian_predicate(m)
  prior = make_prior(m, post.init_posterior(fresh, m.init_std, predicate, m.posterior_scale))

  def init(rng, batch):
    params = net.init(rng, batch["x"]) if not m.init_from else means
    posterior = post.init_posterior(params, m.init_std, predicate, m.posterior_scale)
    if m.learn_noise and not classification:
      posterior["mean"]["likelihood"] = {"log_noise_std": jnp.log(jnp.float32(m.noise_std))}
    return posterior

  def expected_nll(outputs, batch, posterior):
    if classification:
      return objectives.categorical_nll(outputs, batch["y"])
    return objectives.gaussian_nll(outputs[..., 0], _targets(batch), noise_std(posterior, config))

  def loss(posterior, rng, batch, step):
    rng_out, rng_kl = jax.random.split(rng)
    outputs = estimators.sample_outputs(net, posterior, rng_out, batch["x"], m.num_samples)
    nll = expected_nll(outputs, batch, posterior)
    kl = post.kl(posterior, prior, rng_kl)
    weight = objectives.kl_weight(step, beta=m.kl_beta, warmup_steps=m.kl_warmup_steps,
                                  temperature=m.temperature)
    metrics = {"nll": nll, "kl": kl, "elbo": -objectives.per_example_loss(nll, kl, info.num_train)}
    if classification:
      metrics["accuracy"] = jnp.mean(jnp.argmax(outputs.mean(0), -1) == batch["y"])
    return objectives.per_example_loss(nll, kl, info.num_train, weight), metrics

  def evaluate(posterior, rng, batch):
    rng_out, rng_kl = jax.random.split(rng)
    outputs = estimators.sample_outputs(net, posterior, rng_out, batch["x"], m.eval_samples)
    kl = post.kl(posterior, prior, rng_kl)
    elbo = -objectives.per_example_loss(expected_nll(outputs, batch, posterior), kl, info.num_train)
    if classification:
      probs = jax.nn.softmax(outputs, -1).mean(0)
      return {"accuracy": jnp.mean(jnp.argmax(probs, -1) == batch["y"]),
              "nll": objectives.categorical_predictive_nll(outputs, batch["y"]).mean(),
              "kl": kl, "elbo": elbo}
    return {**regression_metrics(outputs[..., 0], _targets(batch), noise_std(posterior, config)),
            "kl": kl, "elbo": elbo}

  return Task(init, loss, evaluate)


def _targets(batch):
  y = batch["y"]
  return y.reshape(y.shape[0]) if y.ndim == 2 else y


def regression_metrics(means, targets, sigma):
  """RMSE of the predictive mean, NLL of the K-sample mixture, coverage of its 95% interval."""
  pred = regression_predictive(means, jnp.broadcast_to(sigma, means.shape))
  lower, upper = central_interval(pred.mean, pred.std, 0.95)
  return {"rmse": jnp.sqrt(jnp.mean((pred.mean - targets)**2)),
          "nll": objectives.gaussian_predictive_nll(means, targets, sigma).mean(),
          "coverage_95": jnp.mean((targets >= lower) & (targets <= upper))}
