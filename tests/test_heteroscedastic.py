"""The heteroscedastic regression head (bnnjax.likelihoods), the point regressor, the
aleatoric / epistemic split and the heteroscedastic_toy data set: known answers."""

import math
import os

import haiku as hk
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

import bnnjax
from bnnjax import data, likelihoods, models, train
from bnnjax.evaluation import regression
from bnnjax.methods import ensemble, mean_field, point
from bnnjax.predictive import regression_predictive
from bnnjax.task import DataInfo

INFO = DataInfo(input_shape=(1,), num_classes=0, num_train=100)
LOG_2PI = math.log(2 * math.pi)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def linear(width):
  """A Haiku function x [B, 1] -> [B, width], one hk.Linear named "linear"."""
  return lambda x: hk.Linear(width, name="linear")(x)


def gaussian_nll(y, mean, std):
  return 0.5 * ((y - mean) / std) ** 2 + math.log(std) + 0.5 * LOG_2PI


def softplus(s):
  return math.log1p(math.exp(s))


# Outputs (mean, s) = (x w0 + b0, x w1 + b1) with w = (2, -1), b = (0.5, 0.3).
HAND_PARAMS = {"linear": {"w": jnp.array([[2.0, -1.0]]), "b": jnp.array([0.5, 0.3])}}
HAND_BATCH = {"x": jnp.array([[0.0], [1.0], [-2.0]]), "y": jnp.array([1.0, 2.0, -3.0])}


def hand_nlls():
  """The closed-form Gaussian NLL of each HAND_BATCH row under the head's std(x)."""
  out = []
  for x, y in zip([0.0, 1.0, -2.0], [1.0, 2.0, -3.0]):
    mean, s = 2.0 * x + 0.5, -1.0 * x + 0.3
    out.append(gaussian_nll(y, mean, likelihoods.MIN_STD + softplus(s)))
  return np.array(out)


def test_head_nll_is_the_closed_form_gaussian_nll_with_a_std_per_input():
  task = point.regression_task(linear(2), INFO, likelihoods.HETEROSCEDASTIC)
  loss, _ = task.loss(HAND_PARAMS, jax.random.PRNGKey(0), HAND_BATCH, 0)
  np.testing.assert_allclose(float(loss), hand_nlls().mean(), rtol=1e-6)
  mean, std = task.predictor.sample(HAND_PARAMS, jax.random.PRNGKey(0), HAND_BATCH["x"], 8)
  assert mean.shape == std.shape == (1, 3)  # a point estimate: K = 1 whatever is asked
  np.testing.assert_allclose(std[0], [likelihoods.MIN_STD + softplus(s) for s in (0.3, -0.7, 2.3)], rtol=1e-6)
  # the mean-field method uses the same head: a posterior with (almost) no spread has the same NLL
  m = ml_collections.ConfigDict(
    {**mean_field.DEFAULTS, "likelihood": "heteroscedastic", "estimator": "reparam", "init_std": 1e-7}
  )
  mf = mean_field.make_task(linear(2), m, INFO)
  posterior = mf.init(jax.random.PRNGKey(0), HAND_BATCH)
  posterior["mean"] = HAND_PARAMS
  metrics = mf.evaluate(posterior, jax.random.PRNGKey(1), HAND_BATCH)
  np.testing.assert_allclose(float(metrics["nll"]), hand_nlls().mean(), rtol=1e-4)


def test_point_regressor_with_fixed_noise_has_the_nll_of_a_gaussian_of_that_std():
  task = point.regression_task(linear(1), INFO, likelihoods.GAUSSIAN, noise_std=0.5)
  params = {"linear": {"w": jnp.array([[2.0]]), "b": jnp.array([0.5])}}
  loss, _ = task.loss(params, jax.random.PRNGKey(0), HAND_BATCH, 0)
  expected = [gaussian_nll(y, 2.0 * x + 0.5, 0.5) for x, y in zip([0.0, 1.0, -2.0], [1.0, 2.0, -3.0])]
  np.testing.assert_allclose(float(loss), np.mean(expected), rtol=1e-6)
  mean, std = task.predictor.sample(params, jax.random.PRNGKey(0), HAND_BATCH["x"], 4)
  np.testing.assert_allclose(mean[0], [0.5, 2.5, -3.5])
  np.testing.assert_allclose(std, 0.5)
  assert task.predictor.kind == "regressor"


def test_heteroscedastic_map_recovers_the_noise_std_of_each_region():
  rng = np.random.default_rng(0)
  x = np.concatenate([rng.uniform(-2, -1, 500), rng.uniform(1, 2, 500)]).astype(np.float32)
  true_std = np.where(x < 0, 0.1, 0.5)
  y = (x + true_std * rng.standard_normal(len(x))).astype(np.float32)
  batch = {"x": jnp.asarray(x[:, None]), "y": jnp.asarray(y)}
  model = models.get("point/mlp")
  m = model.default_config()
  m.hidden_sizes, m.activation, m.likelihood = (16,), "tanh", "heteroscedastic"
  task = model.make_task(m, INFO._replace(num_train=len(x)))
  params = task.init(jax.random.PRNGKey(0), batch)
  optimizer = optax.adam(1e-2)

  @jax.jit
  def steps(params, state):
    def step(carry, _):
      params, state = carry
      grads = jax.grad(lambda p: task.loss(p, None, batch, 0)[0])(params)
      updates, state = optimizer.update(grads, state)
      return (optax.apply_updates(params, updates), state), None

    return jax.lax.scan(step, (params, state), None, length=1500)[0]

  params, _ = steps(params, optimizer.init(params))
  _, std = task.predictor.sample(params, None, jnp.array([[-1.5], [1.5]]), 1)
  np.testing.assert_allclose(std[0], [0.1, 0.5], rtol=0.2)


def test_aleatoric_and_epistemic_parts_of_a_known_mixture():
  # two members at one input: N(0, 1²) and N(2, 3²): aleatoric² = (1 + 9) / 2, epistemic² = 1
  pred = regression_predictive(jnp.array([[0.0], [2.0]]), jnp.array([[1.0], [3.0]]))
  np.testing.assert_allclose(
    [pred.mean[0], pred.aleatoric_std[0], pred.epistemic_std[0], pred.std[0]],
    [1.0, math.sqrt(5.0), 1.0, math.sqrt(6.0)],
    rtol=1e-6,
  )
  # an ensemble of two heteroscedastic members whose outputs at x = 0 are their biases
  apply = hk.without_apply_rng(hk.transform(linear(2))).apply
  predictor = ensemble.sample_predictor(apply, False, 1.0, likelihoods.HETEROSCEDASTIC)
  members = {"linear": {"w": jnp.zeros((2, 1, 2)), "b": jnp.array([[0.0, 0.2], [2.0, -1.0]])}}
  means, stds = predictor.sample(members, None, jnp.zeros((1, 1)), 1)
  pred = regression_predictive(means, stds)
  s = [likelihoods.MIN_STD + softplus(v) for v in (0.2, -1.0)]
  np.testing.assert_allclose(pred.aleatoric_std[0], math.sqrt((s[0] ** 2 + s[1] ** 2) / 2), rtol=1e-6)
  np.testing.assert_allclose(pred.epistemic_std[0], 1.0, rtol=1e-6)


def test_epistemic_std_in_the_gaps_of_the_data():
  x_train = np.concatenate([np.linspace(0, 1, 50), np.linspace(3, 4, 50)])
  grid = -1.995 + 0.01 * np.arange(800)  # x.xx5 from -1.995 to 5.995: none on a boundary
  epistemic = np.where((grid > 1.5) & (grid < 2.5), 3.0, 1.0)  # high only well inside the gap
  out = regression.epistemic_near_and_far(grid, epistemic, x_train)
  assert out["epistemic_std_near_data"] == 1.0
  # in the gap: 160 points in (1.2, 2.8) (farther than 5% of the range 4 from the data), the
  # 100 in (1.5, 2.5) at 3
  np.testing.assert_allclose(out["epistemic_std_in_gaps"], (3.0 * 100 + 1.0 * 60) / 160, rtol=1e-6)


def test_heteroscedastic_toy_has_its_noise_and_its_gap():
  train, test = data.load("heteroscedastic_toy", "train"), data.load("heteroscedastic_toy", "test")
  low, high = data.HETERO_TOY_GAP
  x, gap_x = train["x"][:, 0], test["x"][-data.HETERO_TOY_GAP_TEST :, 0]
  assert train["x"].shape == (1000, 1) and len(test["x"]) == 1000 + data.HETERO_TOY_GAP_TEST
  assert not np.any((x > low) & (x < high)) and np.all((gap_x > low) & (gap_x < high))
  assert x.min() >= -4 and x.max() <= 4
  z = (train["y"] - data.hetero_toy_mean(x)) / data.hetero_toy_std(x)  # standard normal noise
  assert abs(z.std() - 1) < 0.06 and abs(z.mean()) < 0.1
  far, near = np.abs(x) > 3, np.abs(x) < 1  # the noise grows with |x|
  assert (train["y"] - data.hetero_toy_mean(x))[far].std() > 3 * (train["y"] - data.hetero_toy_mean(x))[
    near
  ].std()
  np.testing.assert_array_equal(data.load("heteroscedastic_toy", "train", seed=0)["y"], train["y"])
  assert not np.array_equal(data.load("heteroscedastic_toy", "train", seed=1)["y"], train["y"])


@pytest.mark.parametrize(
  "name, fields, num_classes, message",
  [
    (
      "point/mlp",
      {"likelihood": "poisson"},
      0,
      "config.model.likelihood: unknown likelihood 'poisson'; choose",
    ),
    ("bayes_mlp", {"likelihood": "hetero"}, 0, "config.model.likelihood: unknown likelihood 'hetero'"),
    ("ensemble/mlp", {"likelihood": "heteroscedastic"}, 10, "needs a regression data set, got one with 10"),
    ("mean_field/mlp", {"likelihood": "heteroscedastic"}, 10, "needs a regression data set"),
    ("dropout/mlp", {"likelihood": "heteroscedastic"}, 3, "needs a regression data set"),
    ("bayes_mlp", {"likelihood": "heteroscedastic", "learn_noise": True}, 0, "exclude each other"),
  ],
)
def test_bad_likelihood_is_one_line(name, fields, num_classes, message):
  model = models.get(name)
  m = model.default_config()
  m.update(fields)
  with pytest.raises(ValueError, match=message) as error:
    model.make_task(m, DataInfo((1,), num_classes, 100))
  assert "\n" not in str(error.value)


def test_the_config_field_builds_a_two_output_network():
  config = bnnjax.config.with_overrides(
    bnnjax.base_config(),
    {"data.name": "heteroscedastic_toy", "model.name": "bayes_mlp", "model.likelihood": "heteroscedastic"},
  )
  task = train.build_task(config, INFO)
  posterior = jax.eval_shape(task.init, jax.random.PRNGKey(0), {"x": jnp.zeros((1, 1)), "y": jnp.zeros((1,))})
  last = f"mlp/~/linear_{len(config.model.hidden_sizes)}"
  assert posterior["mean"][last]["b"].shape == (2,)


@pytest.mark.parametrize("method", ["point", "mean_field", "ensemble", "dropout"])
def test_every_method_of_the_config_predicts_a_std_per_input(method):
  module = bnnjax.config.load_config_file(os.path.join(REPO, "configs", "heteroscedastic_toy.py"))
  config = bnnjax.config.resolve(module.get_config(method))
  task = train.build_task(config, INFO)
  batch = {"x": jnp.array([[-3.0], [0.0], [3.0]]), "y": jnp.zeros(3)}
  params = task.init(jax.random.PRNGKey(0), batch)
  means, stds = task.predictor.sample(params, jax.random.PRNGKey(1), batch["x"], 2)
  assert means.shape == stds.shape and means.shape[1] == 3
  assert np.all(stds > likelihoods.MIN_STD) and np.ptp(np.asarray(stds)[0]) > 1e-4  # not one noise_std
