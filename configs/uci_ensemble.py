r"""A deep ensemble (5 members) on a UCI regression set (the benchmark's protocol: scripts/uci.py).

    python scripts/uci.py --config=configs/uci_ensemble.py --data=concrete \
        --workdir=runs/uci/concrete/ensemble

The published protocol's training (bnnjax.sweep.uci.protocol_config: one hidden layer of 50 ReLU
units, 400 epochs of Adam, a cosine schedule); the learning rate (get_grid) and the noise std
(after training, bnnjax.evaluation.uci.NOISE_GRID) chosen per split on an 80/20 split of its
training rows. get_sweep() alone (scripts/sweep.py) runs the 20 splits at the defaults below,
without choosing anything.
r"""

from bnnjax import config as config_lib
from bnnjax.sweep import uci

SELECT_NOISE = True  # the noise std is fixed in training, chosen on the validation rows
LAPLACE = ""  # no Laplace posterior fitted after training
NUTS = {}  # not a NUTS reference: trained by the loop


def get_config():
  c = uci.protocol_config("ensemble/mlp")
  c.model.ensemble_size = 5
  c.model.noise_std = 0.3
  return c


def get_grid():
  """What is chosen on the validation rows (besides the noise std)."""
  return config_lib.product({"optimizer.lr": [1e-3, 1e-2]})


def get_sweep():
  return uci.split_sweep()
