"""RealNVP on a ring of 8 Gaussians (radius 2, std 0.1): 8 affine couplings, conditioners 2-64-64-4.

python scripts/train.py --config=configs/flow_ring.py --workdir=runs/flow_ring
python scripts/flow_plots.py --workdir=runs/flow_ring
"""

import os

from bnnjax.config import load_config_file


def get_config():
  """configs/flow_moons.py on the ring."""
  c = load_config_file(os.path.join(os.path.dirname(__file__), "flow_moons.py")).get_config()
  c.data.name = "ring"
  return c
