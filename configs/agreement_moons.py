"""Approximate posteriors against the NUTS reference on labelled two moons (200 training points).

    python scripts/agreement.py --config=configs/agreement_moons.py --workdir=runs/agreement

Every method runs on the same 2-16-16-2 ReLU MLP with the same N(0, 1) prior on every weight
(where the method has a prior); full-batch NUTS (4 chains) over that network's weights is the
reference predictive, and each method is scored by its top-1 agreement and mean total
variation against it on the 1000 test points (Izmailov et al. 2021). `get_sweep` lists the
methods; `CONTINUED` lists those that start from row 0's trained MLP (SWAG continues its SGD).
"""

from bnnjax import models
from bnnjax.config import base_config


def get_config():
  c = base_config()
  c.data.name = "labelled_moons"
  c.model = models.get("mlp").default_config()
  c.model.hidden_sizes = (16, 16)
  c.optimizer.lr = 3e-3
  c.batch_size = 50
  c.num_steps = 4000
  c.eval_every = c.checkpoint_every = 4000
  c.log_every = 1000
  c.progress_bar = False
  return c


def get_sweep():
  return [
    {"model.name": "mlp"},
    {
      "model.name": "mean_field/mlp",
      "model.prior_scale": 1.0,
      "model.eval_samples": 64,
      "model.init_std": 0.1,
    },
    {"model.name": "ensemble/mlp", "model.ensemble_size": 10},
    {"model.name": "dropout/mlp", "model.dropout_rate": 0.1, "model.eval_samples": 64},
    {
      "model.name": "sgmcmc/mlp",
      "model.sampler": "sghmc",
      "model.step_size": 0.01,
      "model.prior_std": 1.0,
      "model.num_cycles": 4,
      "model.samples_per_cycle": 8,
    },
  ]


# Methods that continue row 0's run (config.model.init_from = its workdir).
CONTINUED = [
  {
    "model.name": "swag/mlp",
    "model.rank": 10,
    "model.collect_every": 20,
    "model.eval_samples": 64,
    "optimizer.name": "sgd",
    "optimizer.lr": 0.01,
  },
]
