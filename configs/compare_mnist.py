"""Every method on the same 784-400-400-10 MLP, the same MNIST data and epoch budget.

    python scripts/sweep.py --config=configs/compare_mnist.py --workdir=runs/compare --seeds=0,1,2
    python scripts/compare.py --sweep=runs/compare --ood=fashion_mnist,kmnist

Training on train[:50000] (train[50000:] is the validation split, never trained on), 10
epochs each, evaluation only at the end on the 10k test images. Rows:
  mlp                  the point estimate (K = 1)
  ensemble/mlp         5 members, vmapped
  dropout/mlp          MC dropout, p = 0.1, K = 16
  mean_field/mlp       mean-field VI, N(0, 1) prior, β = 1, T = 1 (the true ELBO), K = 16
  mean_field/mlp T=0.1 the same, tempered (a cold posterior: a separate row)
  sgmcmc/mlp           cyclical SGHMC, N(0, 1) prior, T = 1, 2 cycles, 6 samples
  ensemble/mlp β=3     5 members with randomised prior functions (Osband et al. 2018), β = 3
                       (appended last: the points before keep their indices)
Every layer is Bayesian in the Bayesian rows.

SWAG and Laplace start from the mlp row's trained run (a sweep point cannot name another
point's workdir), so they are not sweep points: `get_config("swag")` is SWAG on the same data and
batch, 10 more epochs (3910 steps) of SGD from the mlp row, and scripts/compare.py fits Laplace
(--laplace=last_layer,kfac, λ by the marginal likelihood) on every finished mlp run of the sweep:

    python scripts/train.py --config=configs/compare_mnist.py:swag --workdir=runs/compare_swag/seed=0 \
        --config.model.init_from=runs/compare/00-name=mlp-seed=0
    python scripts/compare.py --sweep=runs/compare --ood=fashion_mnist,kmnist \
        --runs=runs/compare_swag/seed=0 --laplace=last_layer,kfac
"""

from bnnjax import models
from bnnjax.config import base_config

STEPS = 3910  # 10 epochs of 391 batches of 128 from 50,000 images


def get_config(method: str = ""):
  """The mlp row's config; method="swag": SWAG from a trained mlp row (init_from on the command
  line), SGD with momentum 0.9 at a constant 0.01 (Maddox et al. 2019's recipe), 20 snapshots
  twice an epoch, rank 10, K = 16."""
  if method not in ("", "swag"):
    raise ValueError(f"configs/compare_mnist.py: get_config takes '' or 'swag', got {method!r}")
  c = base_config()
  c.data.name = "mnist"
  c.data.train_split = "train[:50000]"
  c.data.validation_split = "train[50000:]"
  c.model = models.get("mlp").default_config()
  c.model.hidden_sizes = (400, 400)
  c.optimizer.lr = 1e-3
  c.optimizer.schedule = "cosine"
  c.batch_size = 128
  c.num_steps = STEPS
  c.eval_every = STEPS
  c.checkpoint_every = 782
  c.log_every = 391
  c.progress_bar = False
  if method == "swag":
    c.model = models.get("swag/mlp").default_config()
    c.model.hidden_sizes = (400, 400)
    c.model.rank, c.model.collect_every, c.model.eval_samples = 10, 195, 16
    c.optimizer.name, c.optimizer.lr, c.optimizer.momentum = "sgd", 0.01, 0.9
    c.optimizer.schedule = "constant"
  return c


def get_sweep():
  bayes = {"model.name": "mean_field/mlp", "model.init_std": 3e-2, "model.eval_samples": 16}
  return [
    {"model.name": "mlp"},
    {"model.name": "ensemble/mlp", "model.ensemble_size": 5},
    {"model.name": "dropout/mlp", "model.dropout_rate": 0.1, "model.eval_samples": 16},
    {**bayes, "model.temperature": 1.0},
    {**bayes, "model.temperature": 0.1},
    {
      "model.name": "sgmcmc/mlp",
      "model.sampler": "sghmc",
      "model.step_size": 0.1,
      "model.num_cycles": 2,
      "model.samples_per_cycle": 3,
    },
    {"model.name": "ensemble/mlp", "model.ensemble_size": 5, "model.prior_function_scale": 3.0},
  ]
