"""Models, found by name.

- A built-in model file `bnnjax/models/<name>.py` declares `MODEL = bnnjax.task.Model(...)`.
- "<method>/<network>" composes any method of `METHODS` with any network of `NETWORKS`
  (e.g. "mean_field/mlp", "point/mlp"): its schema is the network's fields then the method's.
- Code outside the package (a notebook, a test, a research project) declares its own
  `Model` (or Method / Network) and calls `register(...)`; `config.model.name` then finds it
  like a built-in.
"""

import importlib
from typing import Dict, Union

import ml_collections

from bnnjax.task import DataInfo, Method, Model, Network

BUILT_IN = ("mlp", "bayes_mlp", "vae", "vae_flow", "flow")
# Built-in names that are compositions: the deterministic MLP is the point estimate on the MLP.
COMPOSED = {"mlp": ("point", "mlp")}
_REGISTERED: Dict[str, Model] = {}
NETWORKS: Dict[str, Network] = {}
METHODS: Dict[str, Method] = {}
_BUILT_IN_PARTS = set()  # the package's own method and network names, never replaced


def _built_in_parts() -> None:
  """Fills NETWORKS and METHODS with the package's own (imported on first use)."""
  if NETWORKS and METHODS:
    return
  from bnnjax.methods import dropout, ensemble, mean_field, point, sgmcmc, swag  # pylint: disable=import-outside-toplevel
  from bnnjax.models import lenet, mlp, multihead, resnet  # pylint: disable=import-outside-toplevel

  for network in (mlp.NETWORK, lenet.NETWORK, resnet.NETWORK, multihead.NETWORK):
    NETWORKS.setdefault(network.name, network)
    _BUILT_IN_PARTS.add(network.name)
  for method in (
    point.METHOD,
    mean_field.METHOD,
    ensemble.METHOD,
    dropout.METHOD,
    swag.METHOD,
    sgmcmc.METHOD,
  ):
    METHODS.setdefault(method.name, method)
    _BUILT_IN_PARTS.add(method.name)


def compose(method_name: str, network_name: str, name: str = "") -> Model:
  """The Model of `method` on `network`: schema = network fields + method fields.

  Args:
    method_name, network_name: keys of METHODS and NETWORKS.
    name: the model's name (default "<method>/<network>").
  """
  _built_in_parts()
  for kind, key, table in (("method", method_name, METHODS), ("network", network_name, NETWORKS)):
    if key not in table:
      raise ValueError(f"unknown {kind} {key!r}; known: {', '.join(sorted(table))}")
  method, network = METHODS[method_name], NETWORKS[network_name]
  name = name or f"{method_name}/{network_name}"

  def default_config() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict({"name": name, **network.default_config(), **method.default_config()})

  def make_task(m, info: DataInfo, restored=None):
    if method.num_outputs is not None:
      outputs = method.num_outputs(m, info)
    else:
      outputs = info.num_classes if info.num_classes > 0 else 1
    return method.make_task(network.build(m, info, outputs), m, info, restored or {})

  return Model(name, default_config, make_task, method.workdir_fields)


def register(part: Union[Model, Method, Network]):
  """Makes a Model available as config.model.name = model.name, a Method or Network as one
  side of "<method>/<network>"; returns it."""
  _built_in_parts()
  if isinstance(part, Method):
    table = METHODS
  elif isinstance(part, Network):
    table = NETWORKS
  elif isinstance(part, Model):
    if part.name in BUILT_IN or "/" in part.name:
      raise ValueError(f"model name {part.name!r} is taken by a built-in model or has a '/'")
    _REGISTERED[part.name] = part
    return part
  else:
    raise TypeError(f"register expects a bnnjax.task.Model, Method or Network, got {type(part).__name__}")
  if part.name in _BUILT_IN_PARTS or "/" in part.name:
    raise ValueError(f"name {part.name!r} is taken by a built-in method or network, or has a '/'")
  table[part.name] = part
  return part


def names() -> tuple:
  """Every model name config.model.name may take now (compositions as "<method>/<network>")."""
  _built_in_parts()
  return BUILT_IN + tuple(sorted(_REGISTERED)) + ("<method>/<network>",)


def get(name: str) -> Model:
  """The declared Model called `name`: a built-in, or one passed to `register`."""
  if name in _REGISTERED:
    return _REGISTERED[name]
  if name in COMPOSED:
    return compose(*COMPOSED[name], name=name)
  if "/" in name:
    method_name, _, network_name = name.partition("/")
    return compose(method_name, network_name)
  if name not in BUILT_IN:
    raise ValueError(
      f"unknown model {name!r}; known: {', '.join(names())} "
      "(a model of your own needs bnnjax.models.register)"
    )
  return importlib.import_module(f"bnnjax.models.{name}").MODEL
