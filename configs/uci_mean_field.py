r"""Mean-field VI (Bayes by Backprop, a learned noise std) on a UCI regression set (scripts/uci.py).

    python scripts/uci.py --config=configs/uci_mean_field.py --data=concrete \
        --workdir=runs/uci/concrete/mean_field

One hidden layer of 50 ReLU units, a N(0, 1) prior, local reparameterisation, the full ELBO,
400 epochs of Adam (a cosine schedule); the noise std is a learned parameter; the learning rate
(get_grid) is chosen per split on an 80/20 split of its training rows.
r"""

from bnnjax import config as config_lib

NUM_SPLITS = 20
SELECT_NOISE = False  # learned (config.model.learn_noise)


def get_config():
  c = config_lib.base_config()
  c.data.name = "uci"
  c.data.uci_name = "concrete"
  c.model.name = "bayes_mlp"
  c = config_lib.resolve(c)
  c.model.hidden_sizes = (50,)
  c.model.activation = "relu"
  c.model.estimator = "local"
  c.model.num_samples = 1
  c.model.eval_samples = 1000
  c.model.prior = "gaussian"
  c.model.prior_scale = 1.0
  c.model.init_std = 1e-2
  c.model.noise_std = 0.5  # the initial value of the learned noise std
  c.model.learn_noise = True
  c.optimizer.lr = 1e-3
  c.optimizer.schedule = "cosine"
  c.batch_size = 32
  c.num_epochs = 400
  c.steps_per_call = 200  # one compiled call per 200 steps; evaluation and checkpoint at the end only
  c.eval_every = c.checkpoint_every = c.log_every = 1_000_000
  c.max_to_keep = 1
  c.progress_bar = False
  return c


def get_grid():
  """What is chosen on the validation rows (the noise std is learned)."""
  return config_lib.product({"optimizer.lr": [1e-3, 1e-2]})


def get_sweep():
  return [{"data.split_index": i} for i in range(NUM_SPLITS)]
