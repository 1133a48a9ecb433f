"""Continual learning: task sequences as data, VCL against fine-tuning, exact resume, bad input.

Permuted 8x8 digits, two tasks: VCL (the task-1 posterior as task 2's prior) keeps more of
task 1 than fine-tuning (the same network carried over with no prior); a sequence killed in
task 2 and run again ends bit-identical to one never stopped.
"""

import os
import shutil

import haiku as hk
import jax
import numpy as np
import pytest

import bnnjax
from bnnjax import continual, coresets, data, train
from bnnjax.methods import fisher, point
from bnnjax.models import mlp, multihead

TASKS = continual.permuted_tasks(2, seed=0)
EWC_LAMBDA = 100.0  # measured on these two tasks: 1 barely beats fine-tuning, 100 keeps task 1


def digits_config(name, **model):
  config = bnnjax.base_config()
  config.data.name = "digits"
  config.model.name = name
  config.model.hidden_sizes = (32, 32)
  for key, value in model.items():
    config.model[key] = value
  config.optimizer.lr = 3e-3
  config.batch_size, config.num_steps = 64, 200
  config.eval_every = config.checkpoint_every = config.log_every = 100
  config.progress_bar = False
  return config


def vcl_config():
  config = digits_config("bayes_mlp", init_std=0.05, posterior_scale="log_std", eval_samples=4)
  config.optimizer.lr_multipliers = "log_std=5"
  return config


@pytest.fixture(scope="module")
def sequences(tmp_path_factory):
  root = tmp_path_factory.mktemp("continual")
  vcl = continual.fit_sequence(vcl_config(), TASKS, str(root / "vcl"), "vcl", num_samples=4)
  finetune = continual.fit_sequence(digits_config("mlp"), TASKS, str(root / "ft"), "finetune")
  ewc = continual.fit_sequence(digits_config("mlp", ewc_lambda=EWC_LAMBDA), TASKS, str(root / "ewc"), "ewc")
  return root, vcl, finetune, ewc


def test_permuted_tasks_are_fixed_pixel_permutations_of_one_set():
  config = bnnjax.resolve(digits_config("mlp"))
  plain = data.load_split(config.data, "test")
  config.data.permutation_seed = 5
  permuted = data.load_split(config.data, "test")
  order = data.input_permutation(5, 64)
  np.testing.assert_array_equal(permuted["x"].reshape(-1, 64), plain["x"].reshape(-1, 64)[:, order])
  np.testing.assert_array_equal(permuted["y"], plain["y"])
  assert sorted(order.tolist()) == list(range(64)) and order.tolist() != list(range(64))
  config.data.permutation_seed, config.data.classes = -1, (3, 7)
  assert set(np.unique(data.load_split(config.data, "test")["y"])) == {3, 7}


@pytest.mark.slow
def test_vcl_remembers_the_first_task_better_than_fine_tuning(sequences):
  _, vcl, finetune, _ = sequences
  for result in (vcl, finetune):
    assert result.accuracy.shape == (2, 2)
    assert result.accuracy[0, 0] > 0.8 and result.accuracy[1, 1] > 0.6  # each task is learned
  # Fine-tuning forgets task 1 (measured: 0.96 -> 0.46 after task 2); VCL keeps more (0.85 -> 0.60).
  assert vcl.accuracy[1, 0] > finetune.accuracy[1, 0] + 0.1
  assert vcl.backward_transfer() > finetune.backward_transfer()
  assert vcl.average_accuracy()[1] == pytest.approx(vcl.accuracy[1].mean())


@pytest.mark.slow
def test_a_sequence_killed_in_task_two_resumes_bit_identically(sequences, tmp_path):
  root, _, _, _ = sequences
  workdir = str(tmp_path / "vcl")
  config = bnnjax.resolve(vcl_config())
  # Task 1 as the uninterrupted sequence left it (a copy: training it again gives the same).
  shutil.copytree(continual.task_dir(str(root / "vcl"), 0), continual.task_dir(workdir, 0))
  train.fit(
    continual.task_config(config, TASKS, 1, "vcl", workdir), continual.task_dir(workdir, 1), stop_after=60
  )  # killed part way into task 2
  resumed = continual.fit_sequence(vcl_config(), TASKS, workdir, "vcl", num_samples=4)
  full = bnnjax.load(continual.task_dir(str(root / "vcl"), 1)).params
  again = bnnjax.load(continual.task_dir(workdir, 1)).params
  assert all(jax.tree_util.tree_leaves(jax.tree_util.tree_map(np.array_equal, full, again)))
  assert os.path.isfile(os.path.join(workdir, "continual.json"))
  assert resumed.accuracy.shape == (2, 2)


@pytest.mark.slow
def test_ewc_remembers_the_first_task_better_than_fine_tuning_with_the_fisher_as_precision(sequences):
  root, _, finetune, ewc = sequences
  assert ewc.accuracy[1, 1] > 0.6  # task 2 is learned
  assert ewc.accuracy[1, 0] > finetune.accuracy[1, 0] + 0.1
  # The saved penalty: mean = task 1's weights, precision = its Fisher (every training row).
  saved, _ = bnnjax.checkpoint.restore_params(continual.fisher_dir(str(root / "ewc"), 0))
  task1 = bnnjax.load(continual.task_dir(str(root / "ewc"), 0))
  same = jax.tree_util.tree_map(np.array_equal, saved["mean"], task1.params)
  assert all(jax.tree_util.tree_leaves(same))
  train_x = data.load_split(task1.config.data, "train")["x"]
  forward = lambda x: mlp.mlp((32, 32), 10)(x)  # noqa: E731  (digits_config's network)
  fisher_sum = fisher.diagonal_fisher(forward, task1.params, task1.inputs(train_x), True)
  precision = jax.tree_util.tree_map(lambda s: np.exp(-2.0 * np.asarray(s, np.float64)), saved["log_std"])
  for got, want in zip(jax.tree_util.tree_leaves(precision), jax.tree_util.tree_leaves(fisher_sum)):
    np.testing.assert_allclose(got, np.asarray(want) + 1e-12, rtol=2e-3, atol=1e-9)


def test_the_ewc_penalty_is_the_gaussian_log_density_scaled_by_lambda_over_n():
  params = {"layer": {"w": np.array([1.0, 2.0]), "b": np.array([0.5])}}
  prior = {
    "mean": {"layer": {"w": np.array([0.0, 1.0]), "b": np.array([9.0])}},
    "log_std": {"layer": {"w": np.log(np.array([0.5, 2.0]))}},  # b has no scale: free
  }
  penalty = point.gaussian_penalty(params, prior, weight=3.0, num_train=10)
  # 3 * ½ * ((1/0.5)² + (1/2)²) / 10
  assert float(penalty) == pytest.approx(3.0 * 0.5 * (4.0 + 0.25) / 10.0, rel=1e-6)


def test_bad_sequences_are_one_line_errors(tmp_path):
  with pytest.raises(ValueError, match="tasks 1 and 3 are the same"):
    continual.check_tasks(continual.permuted_tasks(2) + [{"data.permutation_seed": -1}])
  with pytest.raises(ValueError, match=r"class groups \(0, 1\) and \(1, 2\) overlap"):
    continual.check_tasks(continual.split_tasks([(0, 1), (1, 2)]))
  with pytest.raises(ValueError, match="at least two distinct classes"):
    bnnjax.fit(
      bnnjax.config.with_overrides(digits_config("mlp"), {"data.classes": (4,)}), str(tmp_path / "one_class")
    )
  with pytest.raises(ValueError, match="unknown continual method 'si'"):
    continual.fit_sequence(digits_config("mlp"), TASKS, str(tmp_path / "x"), "si")
  workdir = str(tmp_path / "changed")
  os.makedirs(workdir)
  continual._check_same_sequence(workdir, {"method": "vcl", "tasks": [{"a": 1}], "model": "m"})  # pylint: disable=protected-access
  with pytest.raises(ValueError, match="holds another continual sequence"):
    continual.fit_sequence(vcl_config(), TASKS, workdir, "vcl")


# --- multi-head networks and coresets --------------------------------------------------------------

GROUPS = ((0, 1), (2, 3))


def test_k_center_picks_the_farthest_point_greedily_on_a_hand_set():
  x = np.array([[0.0, 0.0], [1.0, 0.0], [10.0, 0.0], [0.0, 5.0], [9.0, 1.0]])
  # Row 0; the farthest from it is row 2 (distance 10); then the farthest from {0, 2} is row 3
  # (5 from row 0, against 1 for row 1 and 1.4 for row 4); then row 1 (1 from row 0, 1.41 for 4).
  assert coresets.k_center_rows(x, 4).tolist() == [0, 2, 3, 4]
  assert coresets.select(x, "k_center", 2, seed=0).tolist() == [0, 2]


def test_the_random_coreset_is_disjoint_from_the_training_rows_and_fixed_by_its_seed():
  config = bnnjax.resolve(digits_config("mlp"))
  config.data.classes = (2, 3)
  whole = data.load_split(config.data, "train")
  config.data.coreset_size = 7
  rest, again = data.load_split(config.data, "train"), data.load_split(config.data, "train")
  config.data.coreset_only = True
  core = data.load_split(config.data, "train")
  assert len(core["y"]) == 7 and len(rest["y"]) == len(whole["y"]) - 7
  keys = lambda d: {row.tobytes() for row in d["x"].reshape(len(d["x"]), -1)}  # noqa: E731
  assert not keys(core) & keys(rest) and keys(core) | keys(rest) == keys(whole)
  np.testing.assert_array_equal(again["x"], rest["x"])
  # The rows drawn: default_rng([data seed, permutation seed + 1, *classes]), in that order.
  np.testing.assert_array_equal(core["x"], whole["x"][coresets.random_rows(len(whole["y"]), 7, [0, 0, 2, 3])])
  config.data.coreset_size = 0
  test_whole = data.load_split(config.data, "test")["x"]
  config.data.coreset_size = 7
  np.testing.assert_array_equal(data.load_split(config.data, "test")["x"], test_whole)  # training rows only


def test_the_coreset_union_is_each_tasks_own_coreset_permuted_by_its_own_seed_in_order():
  config = bnnjax.resolve(digits_config("mlp"))
  config.data.coreset_size, config.data.coreset_only = 5, True
  own = []
  for seed, classes in ((-1, ()), (3, ()), (4, (1, 7))):
    config.data.permutation_seed, config.data.classes = seed, classes
    own.append(data.load_split(config.data, "train"))
  assert not np.array_equal(own[0]["x"], own[1]["x"])  # another permutation, other rows
  config.data.coreset_union = ((-1, ()), (3, ()), (4, (1, 7)))
  union = data.load_split(config.data, "train")
  for key in ("x", "y"):
    np.testing.assert_array_equal(union[key], np.concatenate([part[key] for part in own]))
  assert set(union["y"][10:].tolist()) <= {1, 7}
  assert data.data_info(config.data, union).num_train == 15  # the ELBO's N: the union's rows
  test = data.load_split(config.data, "test")  # other splits: this task's own, no union
  config.data.coreset_union = ()
  np.testing.assert_array_equal(test["x"], data.load_split(config.data, "test")["x"])


def test_a_multi_head_network_gives_its_selected_heads_logits_at_its_classes():
  x = np.random.default_rng(0).normal(size=(3, 8, 8, 1)).astype(np.float32)
  net = lambda head: hk.without_apply_rng(  # noqa: E731
    hk.transform(lambda x: multihead.MultiHead((5,), ((0, 1), (2, 3, 4)), head, 10)(x))
  )
  params = jax.jit(net(0).init)(jax.random.PRNGKey(0), x)
  assert set(params) == {"multihead/trunk/~/linear_0", "multihead/head_0", "multihead/head_1"}
  trunk = params["multihead/trunk/~/linear_0"]
  h = np.maximum(x.reshape(3, -1) @ trunk["w"] + trunk["b"], 0.0)
  for head, classes in ((0, [0, 1]), (1, [2, 3, 4])):
    logits = np.asarray(jax.jit(net(head).apply)(params, x))  # the same params serve every head
    want = h @ params[f"multihead/head_{head}"]["w"] + params[f"multihead/head_{head}"]["b"]
    np.testing.assert_allclose(logits[:, classes], want, rtol=1e-5, atol=1e-6)
    others = [c for c in range(10) if c not in classes]
    assert np.all(logits[:, others] == multihead.MASKED)
    assert np.allclose(jax.nn.softmax(logits)[:, classes].sum(-1), 1.0)


def multihead_vcl_config(**data_fields):
  config = vcl_config()
  config.model = bnnjax.models.get("mean_field/multihead").default_config()
  config.model.update(
    hidden_sizes=(16,), head_classes=GROUPS, init_std=0.05, posterior_scale="log_std", eval_samples=2
  )
  config.num_steps = config.eval_every = config.checkpoint_every = config.log_every = 20
  config.batch_size = 32
  for key, value in data_fields.items():
    config.data[key] = value
  return config


@pytest.mark.parametrize("multi_head", [True, False])
def test_coreset_refinements_predict_per_head_or_on_the_union(monkeypatch, multi_head):
  # Training and loading recorded, not run: which refinement starts from which posterior on which
  # coresets, and which run predicts each task after task 3 of 3.
  fitted, unions = [], []
  monkeypatch.setattr(
    train,
    "fit",
    lambda config, workdir: (
      fitted.append((workdir, config.model.prior_workdir)),
      unions.append((tuple(config.data.coreset_union), config.batch_size, config.model.init_from)),
    ),
  )
  monkeypatch.setattr(bnnjax.run, "load", lambda workdir: f"run:{workdir}")
  groups = ((0, 1), (2, 3), (4, 5))
  config = bnnjax.resolve(multihead_vcl_config(coreset_size=6))
  config.model.head_classes = groups
  tasks = continual.split_tasks(groups, multi_head)
  configs = [continual.task_config(config, tasks, t, "vcl", "w") for t in range(3)]
  predicting = continual._predicting_runs(None, configs, tasks, 2, "w", 5)  # pylint: disable=protected-access
  after, core = continual.task_dir("w", 2), lambda j: continual.coreset_dir("w", 2, j)  # noqa: E731
  if multi_head:  # each task: a copy of the posterior after task 3 refined on its own coreset
    assert fitted == [(core(0), after), (core(1), after), (core(2), after)]
    assert predicting == [f"run:{core(j)}" for j in range(3)]
    assert unions == [((), 6, after)] * 3
  else:  # one refinement of the posterior after task 3 on the union of the three coresets
    assert fitted == [(continual.union_dir("w", 2), after)]
    assert unions == [(((-1, (0, 1)), (-1, (2, 3)), (-1, (4, 5))), 18, after)]  # 3 x 6 rows
    assert predicting == [f"run:{continual.union_dir('w', 2)}"] * 3


def test_a_refinement_starts_from_and_is_anchored_to_the_posterior_it_refines_on_one_coreset():
  config = bnnjax.resolve(multihead_vcl_config(coreset_size=6))
  tasks = continual.split_tasks(GROUPS, multi_head=True)
  second = continual.task_config(config, tasks, 1, "vcl", "/w")
  assert second.model.prior_workdir == second.model.init_from == continual.task_dir("/w", 0)
  refine = continual.refine_config(second, "/w/start", steps=7)
  assert (refine.model.prior, refine.model.prior_workdir, refine.model.init_from) == ("posterior",) + (
    "/w/start",
  ) * 2
  assert refine.data.coreset_only and refine.data.classes == (2, 3) and refine.model.head == 1
  assert refine.num_steps == 7 and refine.batch_size == 6  # full batches of the coreset's 6 rows


def test_vcl_adds_each_tasks_head_fresh_under_the_configs_prior_as_vcls_code_does():
  config = bnnjax.resolve(multihead_vcl_config(coreset_size=6))
  config.model.prior = "mixture"
  tasks = continual.split_tasks(GROUPS, multi_head=True)
  first, second = (continual.task_config(config, tasks, t, "vcl", "/w") for t in range(2))
  assert tuple(first.model.fresh_modules) == () and first.model.prior == "mixture"
  assert tuple(second.model.fresh_modules) == ("multihead/head_1",) and second.model.fresh_prior == "mixture"
  assert (
    tuple(continual.refine_config(second, "/w/start", steps=7).model.fresh_modules) == ()
  )  # head 1 trained
  assert tuple(continual.task_config(config, tasks, 1, "ewc", "/w").model.fresh_modules) == ()
  single = continual.task_config(bnnjax.resolve(vcl_config()), TASKS, 1, "vcl", "/w")
  assert tuple(single.model.fresh_modules) == ()  # one head: nothing is new


def test_bad_coresets_and_heads_are_one_line_errors(tmp_path):
  tasks = continual.split_tasks(GROUPS, multi_head=True)
  with pytest.raises(ValueError, match=r"coreset_size=5000 is not smaller than task 1's \d+ training rows"):
    continual.fit_sequence(multihead_vcl_config(coreset_size=5000), tasks, str(tmp_path / "a"))
  with pytest.raises(ValueError, match=r"task 2 trains on classes \(4, 5\) but its head 1"):
    continual.fit_sequence(
      multihead_vcl_config(), continual.split_tasks(((0, 1), (4, 5)), True), str(tmp_path / "b")
    )
  with pytest.raises(ValueError, match="a coreset refines a VCL posterior"):
    continual.fit_sequence(multihead_vcl_config(coreset_size=5), tasks, str(tmp_path / "c"), "finetune")
  with pytest.raises(ValueError, match="must name distinct classes"):
    multihead.check_heads(((0, 1), (1, 2)), 0, 10)
  with pytest.raises(ValueError, match=r"config.model.head must be an index 0..1"):
    multihead.check_heads(GROUPS, 2, 10)
  with pytest.raises(ValueError, match=r"^config.data.coreset_union \(coresets to train on\) needs config"):
    bnnjax.fit(multihead_vcl_config(coreset_size=5, coreset_union=((1, ()),)), str(tmp_path / "e"))
  with pytest.raises(
    ValueError, match=r"holds \(permutation_seed, classes\) pairs such as \(3, \(\)\), got 3$"
  ):
    bnnjax.fit(
      multihead_vcl_config(coreset_size=5, coreset_only=True, coreset_union=(3,)), str(tmp_path / "f")
    )
  with pytest.raises(ValueError, match="coreset_kind one of random, k_center"):
    bnnjax.fit(multihead_vcl_config(coreset_size=5, coreset_kind="kmeans"), str(tmp_path / "d"))
  workdir = str(tmp_path / "changed")
  os.makedirs(workdir)
  record = {"method": "vcl", "tasks": [continual._plain(t) for t in tasks], "model": "mean_field/multihead"}  # pylint: disable=protected-access
  continual._check_same_sequence(workdir, record)  # pylint: disable=protected-access
  with pytest.raises(ValueError, match="holds another continual sequence"):  # the same tasks, now a coreset
    continual.fit_sequence(multihead_vcl_config(coreset_size=5), tasks, workdir)
