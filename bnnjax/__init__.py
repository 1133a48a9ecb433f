"""bnnjax: Bayesian deep learning in JAX and Haiku.

Importing it reads no flags and touches no files: it is safe in a notebook.
"""
from bnnjax import (checkpoint, config, data, distributions, estimators, metrics, models,
                    objectives, posterior, predictive, priors)
from bnnjax.checkpoint import restore_params, restore_run
from bnnjax.config import base_config
from bnnjax.task import DataInfo, Task
from bnnjax.train import TrainState, fit

__version__ = "0.1.0"
