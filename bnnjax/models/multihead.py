"""A multi-head MLP (split MNIST in continual learning): a shared trunk and one output head per task.

    h       = act(W_L · ... act(W_1 · flatten(x) + b_1) ... + b_L)        (the shared trunk)
    z_t     = V_t · h + c_t                  (head t: one output per class of head_classes[t])
    logits  = z_head at the positions head_classes[head], MASKED (-1e9) everywhere else

so the softmax over all num_outputs classes is the softmax of head `head` over its own classes
(split MNIST's two-way heads), the labels keep their values (config.data.classes keeps them),
and a run's accuracy, NLL and ECE are those of the selected head. Every head's parameters exist
in every run (the heads not selected get no gradient from the likelihood), so the runs of all tasks
share one architecture: a posterior or weights carry over from task t to task t + 1
(bnnjax.continual), and another head is evaluated by the same params with `head` changed.

The network `NETWORK` ("multihead") runs under any method: "mean_field/multihead" (VCL),
"point/multihead" (EWC, fine-tuning). Network fields (`NETWORK_DEFAULTS`):
    hidden_sizes, activation    the trunk (as the MLP's)
    head_classes                one tuple of class labels per head, e.g. ((0, 1), (2, 3), ...)
    head                        the head this run trains and predicts with (0-based)
Layers: multihead/trunk/~/linear_0 ... and multihead/head_<t>.
"""

import haiku as hk
import jax.numpy as jnp

from bnnjax.models import mlp
from bnnjax.task import DataInfo, Network

MASKED = -1e9  # the logit of a class the selected head does not have: softmax probability 0
NETWORK_DEFAULTS = dict(
  hidden_sizes=(256, 256), activation="relu", head_classes=((0, 1), (2, 3), (4, 5), (6, 7), (8, 9)), head=0
)


def check_heads(head_classes, head, num_outputs: int) -> tuple:
  """head_classes as a tuple of int tuples; one-line ValueErrors for an empty head, a class
  outside 0..num_outputs-1, a class in two heads, or a head index out of range."""
  groups = tuple(tuple(int(c) for c in group) for group in head_classes)
  if not groups or any(len(group) < 2 for group in groups):
    raise ValueError(f"config.model.head_classes needs heads of >= 2 classes each, got {groups}")
  flat = [c for group in groups for c in group]
  if len(set(flat)) != len(flat) or not all(0 <= c < num_outputs for c in flat):
    raise ValueError(f"config.model.head_classes {groups} must name distinct classes in 0..{num_outputs - 1}")
  if not (isinstance(head, int) and 0 <= head < len(groups)):
    raise ValueError(f"config.model.head must be an index 0..{len(groups) - 1} of head_classes, got {head!r}")
  return groups


def head_module(head: int) -> str:
  """The Haiku module name of head `head` (0-based), as MultiHead names it."""
  return f"multihead/head_{head}"


class MultiHead(hk.Module):
  """x [B, ...] -> logits [B, num_outputs] of head `head` (other classes MASKED)."""

  def __init__(self, hidden_sizes, head_classes, head: int, num_outputs: int, activation="relu"):
    super().__init__(name="multihead")
    self.hidden_sizes, self.head_classes, self.head = tuple(hidden_sizes), head_classes, head
    self.num_outputs, self.act = num_outputs, mlp.activation(activation)

  def __call__(self, x):
    x = hk.Flatten()(x)
    h = self.act(hk.nets.MLP(self.hidden_sizes, activation=self.act, name="trunk")(x))
    # Every head is built (the same params in every task's run); only the selected one is used.
    heads = [hk.Linear(len(group), name=f"head_{t}")(h) for t, group in enumerate(self.head_classes)]
    positions = jnp.asarray(self.head_classes[self.head])
    logits = jnp.full((x.shape[0], self.num_outputs), MASKED, heads[self.head].dtype)
    return logits.at[:, positions].set(heads[self.head])


def build(m, info: DataInfo, num_outputs: int):
  """The multi-head MLP of the config's fields as a Haiku function x -> [B, num_outputs]."""
  del info
  sizes = mlp.check_hidden_sizes(m.hidden_sizes)
  mlp.activation(m.activation)
  groups = check_heads(m.head_classes, m.head, num_outputs)
  return lambda x: MultiHead(sizes, groups, m.head, num_outputs, m.activation)(x)


NETWORK = Network(name="multihead", default_config=lambda: dict(NETWORK_DEFAULTS), build=build)
