r"""Trains any bnnjax model from a config file.

  python scripts/train.py --config=configs/mlp_mnist.py --workdir=runs/mlp_mnist \
      --config.optimizer.lr=1e-3 --config.data.data_dir=/path/to/mnist

Running it again on the same --workdir continues from the latest checkpoint.
"""

import logging as std_logging
import os
import re
import sys

from absl import app, flags, logging
import jax
from ml_collections import config_flags

import bnnjax

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and config.json.")
_COORDINATOR = flags.DEFINE_string(
  "coordinator_address",
  "",
  "host:port of process 0, for a run over several processes (jax.distributed); empty = one process.",
)
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", 1, "Processes in a jax.distributed run.")
_PROCESS_ID = flags.DEFINE_integer("process_id", 0, "This process's index in a jax.distributed run.")
flags.mark_flags_as_required(["config", "workdir"])


def parse_flags(argv):
  """absl's parser, with a bad --config override reported in one line, not a traceback."""
  try:
    return flags.FLAGS(argv)
  except Exception as e:  # pylint: disable=broad-except
    message = " ".join(str(e).replace("\\'", "'").replace("\\n", " ").replace("\n", " ").strip("'\"").split())
    raise SystemExit(f"error: {_unknown_field(message, argv) or message}") from None


def _unknown_field(message: str, argv) -> str:
  """absl's "x' Did you mean "y" instead of "x"?" as bnnjax.config words it, naming the section."""
  match = re.match(r"(\w+)' Did you mean \"(\w+)\"", message) or re.fullmatch(r"(\w+)()", message)
  if not match:
    return ""
  field, close = match.groups()
  for arg in argv:
    path = arg.split("=", 1)[0].lstrip("-").split(".")
    if path[0] == "config" and path[-1] == field:
      hint = f"did you mean {close!r}?" if close else "its fields are those of the config file's model"
      return f"{'.'.join(path[:-1])} has no field {field!r}; {hint}"
  return ""


def _exit_after(line: str) -> None:
  """Prints the run's one error line and exits with status 1.

  A failed save leaves orbax's writes behind: collected at exit, they log asyncio tracebacks,
  and TensorStore's callbacks print "Event loop is closed" as the interpreter shuts down,
  after the line that says what failed. Nothing of the run is left to report, so stderr is
  closed to them once the line is out.
  """
  std_logging.getLogger("asyncio").setLevel(std_logging.CRITICAL)
  sys.stderr.flush()
  console = os.dup(2)  # closed to the others first, so that nothing interleaves with the line
  os.dup2(os.open(os.devnull, os.O_WRONLY), 2)
  sys.stderr = open(os.devnull, "w", encoding="utf-8")  # pylint: disable=consider-using-with
  os.write(console, f"{line}\n".encode())
  sys.exit(1)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)
  config = _CONFIG.value
  if _COORDINATOR.value:
    # Every process runs this same command; jax.sharding then sees all processes' devices.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  try:
    bnnjax.fit(config, _WORKDIR.value)
  except (ValueError, OSError, FloatingPointError) as e:  # OSError: a full disk, a lost mount
    _exit_after(f"error: {e}")
  print(f"done: metrics in {_WORKDIR.value}/metrics.jsonl, checkpoints in {_WORKDIR.value}/checkpoints")


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
