"""Cyclical SGHMC on scikit-learn's 8x8 digits, 64-128-128-10, N(0, 1) prior, T = 1.

    python scripts/train.py --config=configs/sgmcmc_digits.py --workdir=runs/sghmc_digits

40 epochs in 4 cycles (half exploration, half sampling), 3 samples a cycle: K = 12.
`--config.model.sampler=sgld` for cyclical SGLD.
"""

from bnnjax import models
from bnnjax.config import base_config


def get_config():
  c = base_config()
  c.data.name = "digits"
  c.model = models.get("sgmcmc/mlp").default_config()
  c.model.hidden_sizes = (128, 128)
  c.model.sampler, c.model.step_size, c.model.momentum = "sghmc", 0.05, 0.9
  c.batch_size, c.num_epochs, c.eval_batch_size = 64, 40, 500
  return c
