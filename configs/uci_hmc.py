r"""HMC's reference posterior (full-batch NUTS, bnnjax.methods.hmc) on a UCI regression set:
the benchmark's network (one hidden layer of 50 ReLU units, N(0, 1) on every weight) and its
noise std sampled together; scripts/uci.py runs it on every split (one posterior per split, on
all its training rows, scored on its test rows).

    python scripts/uci.py --config=configs/uci_hmc.py --data=yacht --workdir=runs/uci/yacht/hmc

Nothing is chosen on validation rows: the noise precision 1/σ² has a vague Gamma(1, rate 0.01)
prior on the standardised target (mean 100, i.e. σ about 0.1; PBP's Gamma(6, 6) holds σ near 1,
far above yacht's residuals of about 0.02). Each chain starts from a MAP point (3,000 full-batch
Adam steps, jittered), then window adaptation; NUTS trajectories are capped at 2^8 - 1 leapfrog
steps. R-hat is reported for log σ only: the weights' posterior is multimodal (hidden units
permute), so chains in different modes give large R-hats on weights without being wrong.
Full-batch NUTS is for the small tables (bnnjax.methods.hmc.FULL_BATCH_LIMIT rows).
r"""

from bnnjax.evaluation import uci as protocol
from bnnjax.sweep import uci

SELECT_NOISE = False  # sampled with the weights
LAPLACE = ""
NUTS = {
  "num_chains": 4,
  "num_warmup": 300,
  "num_samples": 300,
  "prior_scale": 1.0,
  "noise_prior": (1.0, 0.01),
  "map_steps": 3000,
  "max_num_doublings": 8,
}


def get_config():
  """The network of the protocol (its training fields are not used: NUTS has no train loop)."""
  return uci.protocol_config(protocol.NUTS_MODEL)


def get_grid():
  return []


def get_sweep():
  return uci.split_sweep()
