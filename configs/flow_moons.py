"""RealNVP on two moons (standardised 2-D points): 8 affine couplings, conditioners 2-64-64-4.

python scripts/train.py --config=configs/flow_moons.py --workdir=runs/flow_moons
python scripts/flow_plots.py --workdir=runs/flow_moons
"""

from bnnjax.config import base_config
from bnnjax.models.flow import default_model_config


def get_config():
  c = base_config()
  c.data.name = "moons"
  c.model = default_model_config()
  c.model.num_coupling_layers = 8
  c.model.hidden_sizes = (64, 64)
  c.optimizer.lr = 1e-3
  c.optimizer.schedule = "cosine"
  c.batch_size = 256
  c.num_steps = 3000
  c.eval_every = 500
  c.checkpoint_every = 1000
  c.eval_batch_size = 1000
  return c
