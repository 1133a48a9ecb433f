"""The model contract: models and networks declared only in this file train, load and evaluate through
bnnjax with no edit to bnnjax/ or scripts/.

Known answers: a categorical "class prior" model (one logit per class, no input) trained by
maximum likelihood predicts the training split's class frequencies, so `Run.predict` and
`Run.evaluate` must report exactly those probabilities and their test NLL.
"""

import haiku as hk
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

import bnnjax
from bnnjax import data
from bnnjax.distributions import categorical_log_prob
from bnnjax.task import CLASSIFIER, DataInfo, Model, Network, Predictor, Task


def class_prior_task(m, info: DataInfo, restored) -> Task:
  """p(y | x) = softmax(logits), the same for every x: its MLE is the class frequencies."""
  del m, restored

  def init(rng, batch):
    del rng, batch
    return {"logits": jnp.zeros(info.num_classes)}

  def logits_of(params, x):
    return jnp.broadcast_to(params["logits"], (x.shape[0], info.num_classes))

  def loss(params, rng, batch, step):
    nll = -jnp.mean(categorical_log_prob(logits_of(params, batch["x"]), batch["y"]))
    return nll, {"nll": nll}

  def evaluate(params, rng, batch):
    return {"nll": -jnp.mean(categorical_log_prob(logits_of(params, batch["x"]), batch["y"]))}

  sample = lambda params, rng, x, k: logits_of(params, x)[None]
  return Task(init, loss, evaluate, predictor=Predictor(CLASSIFIER, sample))


class ResidualMLP(hk.Module):
  """A network bnnjax has never seen: flatten, a linear layer, a residual tanh block, logits."""

  def __init__(self, width, num_classes, name=None):
    super().__init__(name=name)
    self.width, self.num_classes = width, num_classes

  def __call__(self, x):
    h = hk.Linear(self.width, name="embed")(hk.Flatten()(x))
    h = h + jnp.tanh(hk.Linear(self.width, name="block")(h))
    return hk.Linear(self.num_classes, name="logits")(h)


def residual_network(m, info: DataInfo, num_outputs: int):
  del info
  return lambda x: ResidualMLP(m.width, num_outputs)(x)


CLASS_PRIOR = bnnjax.register(
  Model("test_class_prior", lambda: ml_collections.ConfigDict({"name": "test_class_prior"}), class_prior_task)
)
RESIDUAL = bnnjax.register(Network("test_residual", lambda: {"width": 32}, residual_network))


def digits_config(model_name, **model_fields):
  config = bnnjax.base_config()
  config.data.name, config.data.seed = "digits", 2
  config.model = ml_collections.ConfigDict({"name": model_name, **model_fields})
  config.optimizer.lr = 0.05
  config.batch_size, config.num_steps, config.eval_every = 64, 400, 400
  config.checkpoint_every, config.log_every, config.progress_bar = 400, 400, False
  return config


def test_a_model_declared_here_trains_loads_and_predicts_its_known_answer(tmp_path):
  config = digits_config("test_class_prior")
  config.batch_size = 1437  # the whole training split: gradient descent on the exact likelihood
  fitted = bnnjax.fit(config, str(tmp_path))
  run = bnnjax.load(str(tmp_path))
  assert run.capabilities == fitted.capabilities == ("classifier",)
  train, evals, _ = data.load_splits(run.config.data)
  frequencies = np.bincount(train["y"], minlength=10) / len(train["y"])
  pred = run.predict(evals["test"]["x"][:7], num_samples=5)
  np.testing.assert_allclose(pred.probs, np.broadcast_to(frequencies, (7, 10)), atol=2e-3)
  assert np.all(pred.mutual_information == 0.0)  # one sample: no epistemic part

  report = run.evaluate(num_samples=5)
  test_y = evals["test"]["y"]
  expected_nll = -np.mean(np.log(frequencies[test_y]))
  assert report["num_samples"] == 1 and report["num_examples"] == len(test_y)
  assert report["in_distribution"]["nll"] == pytest.approx(expected_nll, abs=2e-3)
  assert report["in_distribution"]["accuracy"] == pytest.approx(
    np.mean(test_y == np.argmax(frequencies)), abs=1e-12
  )
  with pytest.raises(ValueError, match="log_prob needs a generative or density model"):
    run.log_prob(evals["test"]["x"][:2])


def test_mean_field_over_a_custom_module_is_evaluated_like_the_built_in_ones(tmp_path):
  # A network declared here runs under a built-in method by name: "<method>/<network>".
  config = digits_config("mean_field/test_residual", estimator="local", eval_samples=8, init_std=1e-2)
  config.optimizer.lr = 3e-3
  run = bnnjax.fit(config, str(tmp_path))
  assert set(run.params) == {"mean", "rho"}
  assert set(run.params["rho"]) == {"residual_mlp/embed", "residual_mlp/block", "residual_mlp/logits"}
  report = run.evaluate(num_samples=8)
  assert report["num_samples"] == 8 and report["in_distribution"]["accuracy"] > 0.85
  assert report["in_distribution"]["accuracy"] == pytest.approx(
    bnnjax.load(str(tmp_path)).evaluate(num_samples=8)["in_distribution"]["accuracy"], abs=0
  )
  with pytest.raises(ValueError, match="config.model has no field 'widht'; did you mean 'width'"):
    bnnjax.fit(digits_config("mean_field/test_residual", widht=16), str(tmp_path / "typo"))
  # The same network as a point estimate: no sampled weights, K = 1.
  point = bnnjax.fit(digits_config("point/test_residual"), str(tmp_path / "point"))
  assert point.evaluate(num_samples=8)["num_samples"] == 1


def test_a_registered_name_cannot_shadow_a_built_in_model():
  with pytest.raises(ValueError, match="taken by a built-in"):
    bnnjax.register(Model("mlp", CLASS_PRIOR.default_config, class_prior_task))
  with pytest.raises(ValueError, match="taken by a built-in"):
    bnnjax.register(Network("mlp", dict, residual_network))
  with pytest.raises(ValueError, match="unknown model 'nope'; known: mlp, bayes_mlp"):
    bnnjax.models.get("nope")
  with pytest.raises(
    ValueError, match="unknown method 'laplace'; known: dropout, ensemble, mean_field, point"
  ):
    bnnjax.models.get("laplace/mlp")


def test_mean_field_on_the_mlp_is_bayes_mlp_and_point_on_it_is_mlp():
  models = bnnjax.models
  fields = lambda name: set(models.get(name).default_config()) - {"name"}
  assert fields("bayes_mlp") == fields("mean_field/mlp") | {"layer_priors", "bayesian"}
  assert fields("mlp") == fields("point/mlp")
  assert fields("mlp") == {
    "hidden_sizes",
    "activation",
    "init_from",
    "prior_workdir",
    "ewc_lambda",
    "noise_std",
    "likelihood",
  }
  for name in ("mean_field/mlp", "bayes_mlp"):
    assert models.get(name).workdir_fields == ("init_from", "prior_workdir")
