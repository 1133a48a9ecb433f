r"""A point estimate (maximum likelihood: an ensemble of one member) on a UCI regression set
(the benchmark's protocol: scripts/uci.py).

    python scripts/uci.py --config=configs/uci_point.py --data=concrete \
        --workdir=runs/uci/concrete/point

One hidden layer of 50 ReLU units, 400 epochs of Adam (a cosine schedule); the
noise std (after training, bnnjax.evaluation.uci.NOISE_GRID)
chosen per split on an 80/20 split of its training rows. get_sweep() alone (scripts/sweep.py)
runs the 20 splits at the defaults below, without choosing anything.
r"""

import os

from bnnjax.config import load_config_file

_ENSEMBLE = load_config_file(os.path.join(os.path.dirname(__file__), "uci_ensemble.py"))
SELECT_NOISE = _ENSEMBLE.SELECT_NOISE
LAPLACE = ""  # no Laplace posterior fitted after training
NUTS = {}  # not a NUTS reference: trained by the loop
get_grid, get_sweep = _ENSEMBLE.get_grid, _ENSEMBLE.get_sweep


def get_config():
  """configs/uci_ensemble.py with one member."""
  c = _ENSEMBLE.get_config()
  c.model.ensemble_size = 1
  return c
