# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Bring your own network: a posterior over any Haiku module
#
# The built-in models are ordinary Haiku networks plus a *method* that puts a distribution
# over their weights. `bnnjax.methods.mean_field` is that method for mean-field Gaussian
# variational inference (Bayes by Backprop): given any Haiku function `forward(x)`, it
# builds the posterior, the prior, the Monte Carlo estimator, the ELBO and the predictive.
# Here we write a small residual MLP as an `hk.Module`, declare it as a `bnnjax.Network`,
# register it, and from then on every method runs on it by name — `"mean_field/residual"`,
# `"point/residual"`, ... — and it trains, checkpoints, resumes, loads and evaluates like a
# built-in: `bnnjax.fit`, `bnnjax.load`, `run.predict`, `run.evaluate`.
#
# Data: scikit-learn's bundled 8x8 digits (offline, 1437 training images, 360 test).
#
# | variable | default | meaning |
# |---|---|---|
# | `BNNJAX_TUTORIAL_STEPS` | 1000 | training steps (batch 64) |
# | `BNNJAX_TUTORIAL_DIR` | a new temporary folder | where the run and figures go |

# %%
import os
import tempfile

import haiku as hk
import jax
import matplotlib.pyplot as plt
import numpy as np

import bnnjax

plt.switch_backend("Agg")  # as a script (the tests run it so): figures go to files only
# %matplotlib inline

STEPS = int(os.environ.get("BNNJAX_TUTORIAL_STEPS", "1000"))
OUT = os.environ.get("BNNJAX_TUTORIAL_DIR") or tempfile.mkdtemp(prefix="bnnjax_tutorial_")
os.makedirs(OUT, exist_ok=True)
print("writing to", OUT)

# %% [markdown]
# ## The network: a plain Haiku module
#
# Nothing Bayesian in it. Every parameter sits in an `hk.Linear`, which is what the
# default estimator, the local reparameterisation trick, needs (it samples each linear
# layer's pre-activations directly). A network with other parameterised layers can use
# `estimator="reparam"`, which samples the weights themselves.


# %%
class ResidualMLP(hk.Module):
  """flatten -> Linear(width) -> num_blocks x [x + Linear(relu(Linear(relu(x))))] -> Linear."""

  def __init__(self, width: int, num_blocks: int, num_outputs: int, name="residual_mlp"):
    super().__init__(name=name)
    self.width, self.num_blocks, self.num_outputs = width, num_blocks, num_outputs

  def __call__(self, x):
    h = hk.Linear(self.width, name="embed")(x.reshape(x.shape[0], -1))
    for i in range(self.num_blocks):
      r = hk.Linear(self.width, name=f"block_{i}_a")(jax.nn.relu(h))
      h = h + hk.Linear(self.width, name=f"block_{i}_b")(jax.nn.relu(r))
    return hk.Linear(self.num_outputs, name="head")(jax.nn.relu(h))


# %% [markdown]
# ## Declaring and registering the network
#
# A `bnnjax.Network` names the network, gives its own config fields with their defaults,
# and builds the Haiku function:
#
# - `default_config()`: the network's fields. The method adds its own (for mean field:
#   estimator, prior, KL weight, number of samples, ...); all of them can then be set on a
#   config and are checked strictly.
# - `build(m, info, num_outputs)`: `m` is the resolved `config.model`, `info` the
#   `bnnjax.DataInfo` (input shape, number of classes, number of training examples);
#   `num_outputs` is the number of classes (1 for a regressor).
#
# `bnnjax.register(network)` makes `config.model.name = "mean_field/residual"` find it.
# Register it in every process that fits or loads such a run: in a package, put these
# lines in a module you import. (A model that is not a network under a method — its own
# loss, its own predictive — is declared as a `bnnjax.Model` with its own `make_task`;
# see `tests/test_contract.py`.)


# %%
def build(m, info, num_outputs):
  if not (m.width > 0 and m.num_blocks >= 0):
    raise ValueError(f"config.model.width must be > 0 and num_blocks >= 0, got {m.width}, {m.num_blocks}")
  return lambda x: ResidualMLP(m.width, m.num_blocks, num_outputs)(x)


bnnjax.register(
  bnnjax.Network(name="residual", default_config=lambda: {"width": 64, "num_blocks": 2}, build=build)
)

# %% [markdown]
# ## Training it like any other model

# %%
config = bnnjax.base_config()
config.data.name = "digits"
config.model.name = "mean_field/residual"
config.model.width = 64
config.model.num_blocks = 2
config.model.prior_scale = 1.0
config.model.init_std = 1e-2
config.model.kl_warmup_steps = STEPS // 4
config.optimizer.lr = 3e-3
config.optimizer.schedule = "cosine"
config.batch_size = 64
config.num_steps = STEPS
config.eval_every = STEPS
config.checkpoint_every = STEPS
config.log_every = max(1, STEPS // 4)
config.progress_bar = False
print(bnnjax.resolve(config).model)

workdir = os.path.join(OUT, "mean_field_residual")
bnnjax.fit(config, workdir)

# %% [markdown]
# The checkpoint holds the posterior: a mean and a scale for every weight of the module.

# %%
run = bnnjax.load(workdir)  # what a later session (with the model registered) does
print(jax.tree_util.tree_map(np.shape, run.params["mean"]))
print("posterior scale parameters:", [k for k in run.params if k != "mean"])

# %% [markdown]
# ## Predicting and evaluating, as for a built-in model

# %%
test = run.test_data()
pred = run.predict(test["x"], num_samples=32, rng=0)
wrong = pred.probs.argmax(-1) != test["y"]
print(
  f"{wrong.sum()} of {len(wrong)} test digits misclassified; mean mutual information "
  f"{pred.mutual_information[wrong].mean():.4f} on those, "
  f"{pred.mutual_information[~wrong].mean():.4f} on the rest"
)

report = run.evaluate(num_samples=32)
for name, value in report["in_distribution"].items():
  print(f"{name:>10}: {value:.4f}")

# %% [markdown]
# The least certain test digits, by predictive entropy:

# %%
order = np.argsort(-pred.predictive_entropy)[:8]
fig, axes = plt.subplots(1, 8, figsize=(12, 2))
for ax, i in zip(axes, order):
  ax.imshow(test["x"][i, ..., 0], cmap="gray_r")
  ax.set_title(f"{test['y'][i]}→{pred.probs[i].argmax()}\nH={pred.predictive_entropy[i]:.2f}", fontsize=8)
  ax.axis("off")
fig.savefig(os.path.join(OUT, "least_certain_digits.png"), dpi=100, bbox_inches="tight")

# %% [markdown]
# ## The headline number, checked
#
# A broken model sits near 10% accuracy on the 10 digit classes; the trained posterior
# should get well above 85% even with the test suite's short run (300 steps: 0.98; the
# defaults, 1000 steps, also 0.98, ECE 0.04). Misclassified digits should also carry
# more epistemic uncertainty than the rest.

# %%
accuracy = report["in_distribution"]["accuracy"]
print(f"accuracy {accuracy:.4f}, ECE {report['in_distribution']['ece']:.4f}")
assert accuracy > 0.85, accuracy
assert pred.mutual_information[wrong].mean() > pred.mutual_information[~wrong].mean()
plt.close("all")
