"""The tutorials in notebooks/ run end to end, with small settings, and open as notebooks.

Each tutorial is a jupytext percent-format script that reads its settings from
BNNJAX_TUTORIAL_* environment variables, writes only under BNNJAX_TUTORIAL_DIR and asserts
its headline number (accuracy, interval coverage, IWAE NLL, ...), so a tutorial that
breaks, or whose model stops learning, fails here. Those on MNIST-family data need the
real files (the shared_data_dir fixture); the others run offline.
"""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import nbformat  # jupytext's own dependency
import pytest

from tests.conftest import REPO

NOTEBOOKS = REPO / "notebooks"

# Small settings per tutorial: about 15-40 s each on a 2-core CPU, compile time included.
SMALL = {
  "01_bayesian_mlp_mnist.py": {
    "BNNJAX_TUTORIAL_STEPS": "300",
    "BNNJAX_TUTORIAL_TRAIN_SPLIT": "train[:5000]",
    "BNNJAX_TUTORIAL_TEST_SPLIT": "test[:2000]",
    "BNNJAX_TUTORIAL_SAMPLES": "8",
  },
  "02_regression_intervals.py": {"BNNJAX_TUTORIAL_STEPS": "1000"},
  "03_vae.py": {
    "BNNJAX_TUTORIAL_STEPS": "300",
    "BNNJAX_TUTORIAL_TRAIN_SPLIT": "train[:10000]",
    "BNNJAX_TUTORIAL_IWAE_K": "50",
    "BNNJAX_TUTORIAL_NUM_TEST": "1000",
  },
  "04_bring_your_own_network.py": {"BNNJAX_TUTORIAL_STEPS": "300"},
  "05_continual_learning.py": {
    "BNNJAX_TUTORIAL_STEPS": "100",
    "BNNJAX_TUTORIAL_TASKS": "2",
    "BNNJAX_TUTORIAL_BASELINE": "0",
  },
}
NEEDS_DATA = {"01_bayesian_mlp_mnist.py", "03_vae.py"}
TIMEOUT_S = 600


def test_every_tutorial_is_tested():
  assert sorted(p.name for p in NOTEBOOKS.glob("*.py")) == sorted(SMALL)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SMALL))
def test_tutorial_runs(name, tmp_path, request):
  env = {
    **os.environ,
    **SMALL[name],
    "BNNJAX_TUTORIAL_DIR": str(tmp_path / "out"),
    "MPLBACKEND": "Agg",
    # Compile time dominates these short runs, and run.predict / run.evaluate compile the
    # same predictive more than once: a fresh persistent cache lets the repeats hit it.
    "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "jax_cache"),
    "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
  }
  if name in NEEDS_DATA:
    env["BNNJAX_DATA_DIR"] = str(request.getfixturevalue("shared_data_dir"))
  cwd = tmp_path / "cwd"
  cwd.mkdir()
  result = subprocess.run(
    [sys.executable, str(NOTEBOOKS / name)],
    cwd=cwd,
    env=env,
    capture_output=True,
    text=True,
    timeout=TIMEOUT_S,
    check=False,
  )
  assert result.returncode == 0, (
    f"{name} exited {result.returncode}\n--- stdout (tail)\n"
    f"{result.stdout[-3000:]}\n--- stderr (tail)\n"
    f"{result.stderr[-5000:]}"
  )
  assert not any(cwd.iterdir()), f"{name} wrote into its working directory: {list(cwd.iterdir())}"
  assert list((tmp_path / "out").glob("*.png")), f"{name} drew no figure"


def test_tutorials_convert_to_notebooks(tmp_path):
  for source in NOTEBOOKS.glob("*.py"):
    shutil.copy(source, tmp_path / source.name)
  scripts = sorted(str(p) for p in tmp_path.glob("*.py"))
  subprocess.run(
    [sys.executable, "-m", "jupytext", "--to", "ipynb", *scripts],
    cwd=tmp_path,
    check=True,
    capture_output=True,
    text=True,
    timeout=120,
  )
  for script in scripts:
    path = pathlib.Path(script).with_suffix(".ipynb")
    nbformat.validate(nbformat.read(path, as_version=4))  # a valid notebook (nbformat 4 schema)
    notebook = json.loads(path.read_text())
    cells = notebook["cells"]
    code = ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]
    assert notebook["nbformat"] == 4 and code, script
    assert any(c["cell_type"] == "markdown" for c in cells), script
    assert any("import bnnjax" in c for c in code), script
    # The script's comment "# %matplotlib inline" is a magic in the notebook: figures show inline.
    assert any("\n%matplotlib inline" in "\n" + c for c in code), script
