"""Cyclical SGHMC (Zhang et al. 2020) on MNIST, 784-400-400-10, N(0, 1) prior, T = 1.

    python scripts/train.py --config=configs/sgmcmc_mnist.py --workdir=runs/csghmc

4 cycles of 5 epochs; each cycle's first half explores (no noise), the rest samples; 3
samples kept per cycle (12 in all) make the predictive. `--config.model.sampler=sgld` for
cyclical SGLD; `--config.model.temperature` below 1 for a tempered posterior.
"""

from bnnjax import models
from bnnjax.config import base_config


def get_config():
  c = base_config()
  c.data.name = "mnist"
  c.model = models.get("sgmcmc/mlp").default_config()
  c.model.hidden_sizes = (400, 400)
  c.model.sampler, c.model.step_size, c.model.momentum = "sghmc", 0.1, 0.9
  c.model.num_cycles, c.model.exploration, c.model.samples_per_cycle = 4, 0.5, 3
  c.model.prior_std, c.model.temperature = 1.0, 1.0
  c.batch_size = 128
  c.num_epochs = 20
  return c
