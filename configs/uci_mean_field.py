r"""Mean-field VI (Bayes by Backprop, a learned noise std) on a UCI regression set (scripts/uci.py).

    python scripts/uci.py --config=configs/uci_mean_field.py --data=concrete \
        --workdir=runs/uci/concrete/mean_field

One hidden layer of 50 ReLU units, a N(0, 1) prior, local reparameterisation, the full ELBO,
400 epochs of Adam (a cosine schedule); the noise std is a learned parameter; the learning rate
(get_grid) is chosen per split on an 80/20 split of its training rows.
r"""

from bnnjax import config as config_lib
from bnnjax.sweep import uci

SELECT_NOISE = False  # learned (config.model.learn_noise)
LAPLACE = ""  # no Laplace posterior fitted after training
NUTS = {}  # not a NUTS reference: trained by the loop


def get_config():
  c = uci.protocol_config("bayes_mlp")
  c.model.estimator = "local"
  c.model.num_samples = 1
  c.model.eval_samples = 1000
  c.model.prior = "gaussian"
  c.model.prior_scale = 1.0
  c.model.init_std = 1e-2
  c.model.noise_std = 0.5  # the initial value of the learned noise std
  c.model.learn_noise = True
  return c


def get_grid():
  """What is chosen on the validation rows (the noise std is learned)."""
  return config_lib.product({"optimizer.lr": [1e-3, 1e-2]})


def get_sweep():
  return uci.split_sweep()
