"""bnnjax: Bayesian deep learning in JAX and Haiku.

Importing it reads no flags and touches no files: it is safe in a notebook.
"""
from bnnjax import checkpoint, config, data, distributions, models
from bnnjax.checkpoint import restore_params
from bnnjax.config import base_config
from bnnjax.task import DataInfo, Task
from bnnjax.train import TrainState, fit

__version__ = "0.1.0"
