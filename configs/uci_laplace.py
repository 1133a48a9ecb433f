r"""A Laplace posterior (KFAC over every dense layer, the linearised predictive, λ tuned by the
marginal likelihood) fitted to a point estimate on a UCI regression set (scripts/uci.py), as
laplace-torch's defaults do (Daxberger et al. 2021), the posterior over all weights.

    python scripts/uci.py --config=configs/uci_laplace.py --data=yacht --workdir=runs/uci/yacht/laplace

The point estimate (point/mlp, maximum likelihood, no prior in training) trained by the protocol
(one hidden layer of 50 ReLU units, 400 epochs of Adam); per split, the learning rate and then the
noise std (which shapes the posterior: bnnjax.evaluation.uci.LAPLACE_NOISE_GRID, a fit each) are
chosen on an 80/20 split of its training rows. `--set` cannot change LAPLACE: copy this file with
"last_layer" or "diagonal" for the other structures.
r"""

from bnnjax import config as config_lib
from bnnjax.sweep import uci

SELECT_NOISE = True  # chosen with the Laplace fit on the validation rows
LAPLACE = "kfac"  # bnnjax.methods.laplace.STRUCTURES
NUTS = {}  # not a NUTS reference: trained by the loop


def get_config():
  c = uci.protocol_config("point/mlp")
  c.model.noise_std = 0.3  # training's (Adam: the network does not depend on it)
  return c


def get_grid():
  """What is chosen on the validation rows (besides the noise std)."""
  return config_lib.product({"optimizer.lr": [1e-3, 1e-2]})


def get_sweep():
  return uci.split_sweep()
