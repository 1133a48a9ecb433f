r"""Cyclical SGHMC (Zhang et al. 2020) on a UCI regression set (the benchmark's protocol: scripts/uci.py).

    python scripts/uci.py --config=configs/uci_sgmcmc.py --data=yacht --workdir=runs/uci/yacht/sgmcmc

One hidden layer of 50 ReLU units, a N(0, 1) prior, T = 1, the protocol's 400 epochs of batches
of 32 cut into 4 cycles (half exploration, half sampling), 3 samples a cycle: the predictive
mixes S = 12 samples. The noise std is part of the target posterior (it scales the likelihood's
gradient), so it is fixed in training and chosen with the step size on an 80/20 split of each
split's training rows (get_grid), not after training. (Until 2026-11-30 the grid was step size
{3e-4, 1e-3} x noise std {0.1, 0.3}: too narrow for energy's residuals and wine's.)
r"""

from bnnjax.sweep import uci

SELECT_NOISE = False  # the noise std is the model's own: chosen on the grid, before training
LAPLACE = ""  # no Laplace posterior fitted after training
NUTS = {}  # not a NUTS reference: trained by the loop


def get_config():
  c = uci.protocol_config("sgmcmc/mlp")
  c.model.sampler, c.model.step_size, c.model.momentum = "sghmc", 1e-3, 0.9
  c.model.num_cycles, c.model.samples_per_cycle = 4, 3
  c.model.noise_std = 0.3
  return c


def get_grid():
  """What is chosen on the validation rows: the noise std and the step size, in steps of the
  likelihood's scale: its gradient grows as 1 / noise_std^2, so each noise std gets step sizes
  1e-4 and 3e-4 times (noise_std / 0.1)^2. The stds span the sets' residuals (standardised:
  about 0.05 on energy, 0.8 on wine-quality-red)."""
  return [
    {"model.noise_std": s, "model.step_size": float(f"{e * (s / 0.1) ** 2:.2g}")}
    for s in (0.03, 0.1, 0.3, 1.0)
    for e in (1e-4, 3e-4)
  ]


def get_sweep():
  return uci.split_sweep()
