"""Mean-field Gaussian variational inference over any Haiku network (Bayes by Backprop).

The network is an ordinary Haiku function; its weights get the mean-field posterior of
`bnnjax.posterior`, a prior from `bnnjax.priors`, a Monte Carlo estimator from
`bnnjax.estimators` and the ELBO of `bnnjax.objectives`:

    loss = E_q[-log p(y | x, w)] + kl_weight * KL(q || p) / N     (per example)

A Monte Carlo KL (the scale-mixture prior's "mc") under "reparam" scores the K weight draws the
likelihood used, as Bayes by Backprop does; the other estimators never draw whole weights, so
there it draws its own.

The params the loop optimises and checkpoints are the posterior pytree
{"mean": haiku params, "rho" or "log_std": haiku params of the Bayesian leaves}; for
regression with learned noise, "mean" also holds {"likelihood": {"log_noise_std": scalar}}.

Method fields (`DEFAULTS`; a model file adds its network's own):
    estimator                     "reparam" | "local" | "flipout"
    num_samples                   K Monte Carlo samples per training step
    eval_samples                  K for `evaluate`
    prior                         "gaussian" (prior_scale) | "mixture" (mixture_pi,
                                  mixture_scale1, mixture_scale2, mixture_kl: "mc"
                                  unbiased or "bound" closed form) | "posterior" (a
                                  previous run's posterior, passed in by the caller)
    init_std                      initial posterior std
    posterior_scale               "softplus" (std = softplus(rho)) | "log_std" (std =
                                  exp(log_std): the same fit, a faster step)
    kl_beta, kl_warmup_steps, temperature    see bnnjax.objectives.kl_weight
    noise_std, learn_noise        regression likelihood N(y; f(x), noise_std^2)
    likelihood                    "gaussian" (noise_std, learned where learn_noise) |
                                  "heteroscedastic": outputs (mean, std(x)) per input
                                  (bnnjax.likelihoods; learn_noise must be False)
    init_from                     "" or the workdir of a trained run of the same network: its
                                  weights (or posterior means) become the posterior means
    init_from_stds                with init_from a mean-field run: its stds start the posterior's
                                  too (the whole of q_{t-1} starts task t, as VCL's code does);
                                  False: they start at init_std
    prior_workdir                 with prior = "posterior": a previous mean-field run of the
                                  same network, whose posterior becomes the prior
    fresh_modules                 with prior = "posterior": Haiku modules new in this run (a new
                                  task's head in multi-head VCL), e.g. ("multihead/head_2",):
                                  their prior is `fresh_prior`'s ("gaussian" | "mixture", with the
                                  fields above) and their means and stds start fresh, not from
                                  prior_workdir / init_from (VCL's code adds a head this way)
The caller (bnnjax.train.fit, bnnjax.load) reads the runs named by init_from and
prior_workdir and passes their params in `restored`.
"""

import difflib
import math
from typing import Any, Callable, Optional

import haiku as hk
import jax
import jax.numpy as jnp
import ml_collections

from bnnjax import estimators, likelihoods, objectives, posterior as post, priors
from bnnjax.methods.common import targets, weights_from
from bnnjax.predictive import central_interval, check_num_samples, regression_predictive
from bnnjax.task import CLASSIFIER, REGRESSOR, DataInfo, Method, Predictor, Task

DEFAULTS = dict(
  estimator="local",
  num_samples=1,
  eval_samples=16,
  prior="gaussian",
  prior_scale=1.0,
  mixture_pi=0.5,
  mixture_scale1=1.0,
  mixture_scale2=math.exp(-6),
  mixture_kl="mc",
  init_std=1e-2,
  posterior_scale="softplus",
  kl_beta=1.0,
  kl_warmup_steps=0,
  temperature=1.0,
  noise_std=1.0,
  learn_noise=False,
  likelihood=likelihoods.GAUSSIAN,
  init_from="",
  init_from_stds=False,
  prior_workdir="",
  fresh_modules=(),
  fresh_prior="gaussian",
)
WORKDIR_FIELDS = ("init_from", "prior_workdir")


def default_config(name: str, **network_fields) -> ml_collections.ConfigDict:
  """A model's config schema: its name, its network's fields, then this method's fields."""
  return ml_collections.ConfigDict({"name": name, **network_fields, **DEFAULTS})


def validate(m) -> None:
  """One-line ValueErrors naming the bad config.model field of the method, before compiling."""

  def positive(field):
    if not m[field] > 0:
      raise ValueError(f"config.model.{field} must be positive, got {m[field]!r}")

  if m.estimator not in estimators.ESTIMATORS:
    raise ValueError(
      f"config.model.estimator: unknown estimator {m.estimator!r}; "
      f"choose one of {', '.join(estimators.ESTIMATORS)}"
    )
  for field in ("num_samples", "eval_samples"):
    try:
      check_num_samples(m[field])
    except ValueError:
      raise ValueError(f"config.model.{field} (K) must be an integer >= 1, got {m[field]!r}") from None
  for field in ("init_std", "temperature", "noise_std"):
    positive(field)
  if m.prior not in priors.PRIORS:
    raise ValueError(
      f"config.model.prior: unknown prior {m.prior!r}; choose one of {', '.join(priors.PRIORS)}"
    )
  if m.prior == "gaussian":
    positive("prior_scale")
  if m.prior == "mixture":
    validate_mixture(m)
  if m.posterior_scale not in post.SCALE_KEYS:
    raise ValueError(
      f"config.model.posterior_scale must be one of {', '.join(post.SCALE_KEYS)}, got {m.posterior_scale!r}"
    )
  if m.kl_beta < 0 or m.kl_warmup_steps < 0:
    raise ValueError("config.model.kl_beta and config.model.kl_warmup_steps must be >= 0")
  if m.prior == "posterior" and not m.prior_workdir:
    raise ValueError("config.model.prior='posterior' needs config.model.prior_workdir")
  if tuple(m.fresh_modules) and m.prior != "posterior":
    raise ValueError(f"config.model.fresh_modules needs prior='posterior', got prior={m.prior!r}")
  if m.fresh_prior not in ("gaussian", "mixture"):
    raise ValueError(f"config.model.fresh_prior must be 'gaussian' or 'mixture', got {m.fresh_prior!r}")
  likelihoods.check_name(m.likelihood)
  if m.likelihood == likelihoods.HETEROSCEDASTIC and m.learn_noise:
    raise ValueError(
      "config.model.learn_noise=True and config.model.likelihood='heteroscedastic' exclude each other: "
      "the heteroscedastic head learns its own std(x)"
    )


def validate_mixture(m) -> None:
  """The scale-mixture prior's fields: pi in (0, 1), positive scales, a known KL."""
  if not 0 < m.mixture_pi < 1:
    raise ValueError(f"config.model.mixture_pi must lie in (0, 1), got {m.mixture_pi!r}")
  for field in ("mixture_scale1", "mixture_scale2"):
    if not m[field] > 0:
      raise ValueError(f"config.model.{field} must be positive, got {m[field]!r}")
  if m.mixture_kl not in priors.MIXTURE_KL:
    raise ValueError(
      f"config.model.mixture_kl must be one of {', '.join(priors.MIXTURE_KL)}, got {m.mixture_kl!r}"
    )


def named_prior(kind: str, m):
  """The "gaussian" or "mixture" prior of the config's fields."""
  if kind == "gaussian":
    return priors.gaussian_prior(m.prior_scale)
  return priors.scale_mixture_prior(m.mixture_pi, m.mixture_scale1, m.mixture_scale2, m.mixture_kl)


def previous_posterior(previous, reference_posterior, not_a_posterior: str):
  """A restored run's params as a posterior of jax arrays, its architecture checked against
  reference_posterior; ValueError(not_a_posterior) when the run holds no posterior."""
  if not post.is_posterior(previous):
    raise ValueError(not_a_posterior)
  key = post.scale_key(previous)
  previous = jax.tree_util.tree_map(jnp.asarray, {"mean": previous["mean"], key: previous[key]})
  post.check_same_architecture(reference_posterior, previous)
  return previous


def posterior_prior(previous, reference_posterior, where: str):
  """A previous run's posterior as the prior (continual learning), its architecture checked."""
  message = f"{where} holds no Bayesian posterior (no 'mean' and 'rho' or 'log_std' params)"
  return priors.PosteriorPrior(previous_posterior(previous, reference_posterior, message))


def initial_stds(m, reference_posterior, restored):
  """None (stds at init_std), or the stds of the mean-field run init_from names, its
  architecture checked against the posterior's."""
  if not (m.init_from and m.init_from_stds):
    return None
  where = f"config.model.init_from={m.init_from!r}"
  message = f"config.model.init_from_stds=True needs a mean-field run; {where} is a point estimate"
  return post.stds(previous_posterior(restored["init_from"], reference_posterior, message))


def initial_means(m, fresh_shapes, restored):
  """None (a fresh init), or the init_from run's weights (its means if it was Bayesian), checked
  against the network's parameter shapes."""
  if not m.init_from:
    return None
  return weights_from(restored["init_from"], fresh_shapes, f"config.model.init_from={m.init_from!r}")


def method_task(
  forward: Callable, m, info: DataInfo, restored, *, predicate=None, prior_of: Optional[Callable] = None
) -> Task:
  """Mean-field VI as a Method: what was restored from init_from / prior_workdir is checked
  against the network's shapes (jax.eval_shape: nothing computed) and used.

  Args:
    forward, m, info: as make_task.
    restored: {"init_from": params, "prior_workdir": posterior} where those fields are set.
    predicate: which leaves are Bayesian (None: all).
    prior_of: reference posterior (shapes) -> a prior object, or None for `m.prior`'s
      (a network's per-layer priors).
  """
  validate(m)
  example = jax.ShapeDtypeStruct((1, *info.input_shape), jnp.float32)
  fresh = jax.eval_shape(
    estimators.bayesian_transform(forward, m.estimator).init, jax.random.PRNGKey(0), example
  )
  reference = jax.eval_shape(
    lambda p: post.init_posterior(p, m.init_std, predicate, m.posterior_scale), fresh
  )
  if m.estimator != "reparam":  # a layer the estimator cannot handle: one line, before compiling
    apply = estimators.bayesian_transform(forward, m.estimator).apply
    jax.eval_shape(apply, reference, jax.random.PRNGKey(0), example)
  new = fresh_modules(m, reference)
  prior = prior_of(reference) if prior_of is not None else None
  if prior is None and m.prior == "posterior":
    prior = posterior_prior(
      restored["prior_workdir"], reference, f"config.model.prior_workdir={m.prior_workdir!r}"
    )
  means, stds = initial_means(m, fresh, restored), initial_stds(m, reference, restored)
  if new:  # the new modules: the fresh prior, a fresh init and init_std
    fresh_prior = named_prior(m.fresh_prior, m)
    modules = post.scale_params(reference)
    prior = priors.layerwise_prior({module: fresh_prior if module in new else prior for module in modules})
    means = None if means is None else {k: v for k, v in means.items() if k not in new}
    stds = None if stds is None else {k: _filled(v, m.init_std) if k in new else v for k, v in stds.items()}
  return make_task(forward, m, info, initial_means=means, initial_stds=stds, prior=prior, predicate=predicate)


def fresh_modules(m, reference_posterior) -> tuple:
  """m.fresh_modules, each checked to be a Bayesian module of the network (a one-line
  ValueError naming the closest one otherwise)."""
  modules = sorted(post.scale_params(reference_posterior))
  for module in tuple(m.fresh_modules):
    if module not in modules:
      close = difflib.get_close_matches(module, modules, n=1)
      hint = f"; did you mean {close[0]!r}?" if close else f"; the network's are {modules}"
      raise ValueError(f"config.model.fresh_modules: {module!r} is not a Bayesian module{hint}")
  return tuple(m.fresh_modules)


def _filled(tree, value):
  return jax.tree_util.tree_map(lambda a: jnp.full(a.shape, value, a.dtype), tree)


def noise_std(posterior, m):
  """The regression likelihood's std: learned (in the posterior's means) or m.noise_std."""
  if m.learn_noise:
    return jnp.exp(posterior["mean"]["likelihood"]["log_noise_std"])
  return jnp.asarray(m.noise_std, jnp.float32)


def make_task(
  forward: Callable,
  m,
  info: DataInfo,
  *,
  initial_means: Optional[Any] = None,
  initial_stds: Optional[Any] = None,
  prior: Optional[Any] = None,
  predicate: Optional[Callable] = None,
) -> Task:
  """The variational Task of the Haiku function `forward(x) -> outputs [B, C]` ([B, 1] for
  regression, [B, 2] with the heteroscedastic head), under the method fields `m` (see the module doc).

  Args:
    forward: called inside hk.transform with x [B, *info.input_shape].
    m: a config.model section holding DEFAULTS' fields.
    info: the data; num_classes = 0 makes a regressor with a Gaussian likelihood.
    initial_means: Haiku params to start the posterior means from (e.g. a trained point
      estimate), of every module or of some (the others start from a fresh init), or None.
    initial_stds: the Bayesian leaves' starting stds (structured like post.stds'), or None
      for m.init_std everywhere.
    prior: a prior object of bnnjax.priors, or None for the one `m.prior` names
      ("posterior" needs it given).
    predicate: which leaves are Bayesian (post.init_posterior's), None for all.
  Returns:
    Task(init, loss, evaluate, predictor).
  """
  validate(m)
  likelihoods.check(m.likelihood, info)
  if info.num_train < 1:
    raise ValueError(f"DataInfo.num_train must be >= 1 for the ELBO's KL / N, got {info.num_train}")
  classification = info.num_classes > 0
  if classification and info.num_classes < 2:
    raise ValueError(f"classification needs >= 2 classes, got {info.num_classes}")
  if prior is None and m.prior == "posterior":
    raise ValueError("config.model.prior='posterior' needs the previous run's posterior")
  prior = named_prior(m.prior, m) if prior is None else prior
  net = estimators.bayesian_transform(forward, m.estimator)
  # Under reparameterisation the ELBO's Monte Carlo KL scores the likelihood's own weight draws.
  plain = hk.transform(forward) if m.estimator == "reparam" else None

  def init(rng, batch):
    params = net.init(rng, batch["x"])
    if initial_means is not None:  # all modules, or all but the fresh ones
      params = {**params, **initial_means}
    posterior = post.init_posterior(params, m.init_std, predicate, m.posterior_scale)
    if initial_stds is not None:
      posterior = post.with_stds(posterior, initial_stds)
    if m.learn_noise and not classification:
      posterior["mean"]["likelihood"] = {"log_noise_std": jnp.log(jnp.float32(m.noise_std))}
    return posterior

  def mean_and_std(outputs, posterior):  # [K, B, 1 or 2] -> ([K, B], [K, B])
    return likelihoods.mean_and_std(outputs, m.likelihood, noise_std(posterior, m))

  def expected_nll(outputs, batch, posterior):
    if classification:
      return objectives.categorical_nll(outputs, batch["y"])
    mean, std = mean_and_std(outputs, posterior)
    return objectives.gaussian_nll(mean, targets(batch), std)

  def loss(posterior, rng, batch, step):
    rng_out, rng_kl = jax.random.split(rng)
    if plain is None:
      outputs = estimators.sample_outputs(net, posterior, rng_out, batch["x"], m.num_samples)
      kl = post.kl(posterior, prior, rng_kl)
    else:
      outputs, weights = estimators.sample_outputs_and_weights(
        plain, posterior, rng_out, batch["x"], m.num_samples
      )
      kl = post.kl(posterior, prior, weights=weights)
    nll = expected_nll(outputs, batch, posterior)
    weight = objectives.kl_weight(
      step, beta=m.kl_beta, warmup_steps=m.kl_warmup_steps, temperature=m.temperature
    )
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
      return {
        "accuracy": jnp.mean(jnp.argmax(probs, -1) == batch["y"]),
        "nll": objectives.categorical_predictive_nll(outputs, batch["y"]).mean(),
        "kl": kl,
        "elbo": elbo,
      }
    mean, std = mean_and_std(outputs, posterior)
    return {
      **regression_metrics(mean, targets(batch), std),
      "kl": kl,
      "elbo": elbo,
    }

  def sample(posterior, rng, x, num_samples):
    outputs = estimators.sample_outputs(net, posterior, rng, x, check_num_samples(num_samples))
    if classification:
      return outputs
    return mean_and_std(outputs, posterior)

  predictor = Predictor(CLASSIFIER if classification else REGRESSOR, sample)
  return Task(init, loss, evaluate, predictor=predictor)


def regression_metrics(means, targets, sigma):
  """RMSE of the predictive mean, NLL of the K-sample mixture, coverage of its 95% interval.

  means [K, B], targets [B], sigma: the K outputs' noise stds, [K, B] or a scalar."""
  pred = regression_predictive(means, jnp.broadcast_to(sigma, means.shape))
  lower, upper = central_interval(pred.mean, pred.std, 0.95)
  return {
    "rmse": jnp.sqrt(jnp.mean((pred.mean - targets) ** 2)),
    "nll": objectives.gaussian_predictive_nll(means, targets, sigma).mean(),
    "coverage_95": jnp.mean((targets >= lower) & (targets <= upper)),
  }


METHOD = Method(
  name="mean_field",
  default_config=lambda: dict(DEFAULTS),
  make_task=method_task,
  workdir_fields=WORKDIR_FIELDS,
  num_outputs=likelihoods.method_outputs,
)
