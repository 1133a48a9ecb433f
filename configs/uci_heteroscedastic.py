r"""A deep ensemble with a heteroscedastic head on a UCI regression set: each of 5 members outputs a
mean and a std(x) (config.model.likelihood = "heteroscedastic", bnnjax.likelihoods), the
predictive is their equal mixture, as Lakshminarayanan et al. (2017) train their ensembles
(without their adversarial examples). The benchmark's protocol: scripts/uci.py.

    python scripts/uci.py --config=configs/uci_heteroscedastic.py --data=yacht \
        --workdir=runs/uci/yacht/heteroscedastic

One hidden layer of 50 ReLU units, 400 epochs of Adam (a cosine schedule); each member's std is
learned, so nothing but the learning rate (get_grid) is chosen on the 80/20 split of each split's
training rows.
r"""

import os

from bnnjax.config import load_config_file

_ENSEMBLE = load_config_file(os.path.join(os.path.dirname(__file__), "uci_ensemble.py"))
SELECT_NOISE = False  # each member's std(x) is learned
LAPLACE = ""  # no Laplace posterior fitted after training
NUTS = {}  # not a NUTS reference: trained by the loop
get_grid, get_sweep = _ENSEMBLE.get_grid, _ENSEMBLE.get_sweep


def get_config():
  """configs/uci_ensemble.py with the heteroscedastic head."""
  c = _ENSEMBLE.get_config()
  c.model.likelihood = "heteroscedastic"
  return c
