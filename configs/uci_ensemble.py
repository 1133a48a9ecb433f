r"""A deep ensemble (5 members) on a UCI regression set (the benchmark's protocol: scripts/uci.py).

    python scripts/uci.py --config=configs/uci_ensemble.py --data=concrete \
        --workdir=runs/uci/concrete/ensemble

One hidden layer of 50 ReLU units, 400 epochs of Adam (a cosine schedule); the
noise std (after training, bnnjax.evaluation.uci.NOISE_GRID)
chosen per split on an 80/20 split of its training rows. get_sweep() alone (scripts/sweep.py)
runs the 20 splits at the defaults below, without choosing anything.
r"""

from bnnjax import config as config_lib

NUM_SPLITS = 20
SELECT_NOISE = True  # the noise std is fixed in training, chosen on the validation rows


def get_config():
  c = config_lib.base_config()
  c.data.name = "uci"
  c.data.uci_name = "concrete"
  c.model.name = "ensemble/mlp"
  c = config_lib.resolve(c)
  c.model.hidden_sizes = (50,)
  c.model.activation = "relu"
  c.model.ensemble_size = 5
  c.model.noise_std = 0.3
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
  """What is chosen on the validation rows (besides the noise std)."""
  return config_lib.product({"optimizer.lr": [1e-3, 1e-2]})


def get_sweep():
  return [{"data.split_index": i} for i in range(NUM_SPLITS)]
