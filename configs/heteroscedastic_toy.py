r"""Heteroscedastic regression on the 1-D toy with a gap (bnnjax.data: heteroscedastic_toy).

The network outputs a mean and a std(x) per input (config.model.likelihood = "heteroscedastic",
bnnjax.likelihoods): the predictive std splits into its aleatoric part (the noise, growing with
|x|) and its epistemic part (the posterior's disagreement, which should grow in the gap (1, 2.5)
only). The argument after ':' names the method (default mean_field, a Bayesian MLP: mean field,
local reparameterisation, the full ELBO):

    python scripts/train.py --config=configs/heteroscedastic_toy.py --workdir=runs/hetero_mf
    python scripts/train.py --config=configs/heteroscedastic_toy.py:ensemble --workdir=runs/hetero_ens
    python scripts/evaluate.py --workdir=runs/hetero_mf  # eval.json, regression_bands.png,
                                                         # uncertainty_split.png

"test" is evaluated on the 1000 test rows off the gap, "gap" on the 200 inside it.
Methods: mean_field, ensemble, dropout, point (the MAP head alone: its std is all aleatoric).
"""

from bnnjax import models
from bnnjax.config import base_config

METHODS = ("mean_field", "ensemble", "dropout", "point")


def get_config(method: str = "mean_field"):
  if method not in METHODS:
    raise ValueError(f"configs/heteroscedastic_toy.py: unknown method {method!r}; choose one of {METHODS}")
  c = base_config()
  c.data.name = "heteroscedastic_toy"
  c.data.eval_splits = "test=test[:1000],gap=test[1000:]"
  c.model = models.get(f"{method}/mlp").default_config()
  c.model.likelihood = "heteroscedastic"
  c.model.hidden_sizes = (50, 50)
  c.model.activation = "tanh"
  c.optimizer.lr = 3e-3
  c.num_steps = 3000
  if method == "mean_field":  # with tanh units the full ELBO's optimum underfits: it calls the
    c.model.activation = "relu"  # sine's peaks noise (measured, docs/results.md)
    c.model.num_samples = 4
    c.model.eval_samples = 64
    c.optimizer.lr = 1e-2
    c.num_steps = 4000
  if method == "dropout":
    c.model.eval_samples = 64
  c.optimizer.schedule = "cosine"
  c.batch_size = 1000  # the whole training set: one step per epoch
  c.eval_every = 1000
  c.log_every = 500
  c.checkpoint_every = c.num_steps
  c.eval_batch_size = 1200
  c.progress_bar = False
  return c
