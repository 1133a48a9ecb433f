"""The metric sinks: TensorBoard events hold what was written, and a full disk is one line."""

import glob
import os
import struct

import pytest
from tensorboardX.proto.event_pb2 import Event

import bnnjax
from bnnjax import checkpoint, writers


def read_events(folder):
  """Every Event in the events files of `folder`, file by file in creation order."""
  events = []
  for path in sorted(glob.glob(os.path.join(folder, "events.out.tfevents.*")), key=os.path.getmtime):
    with open(path, "rb") as f:
      data = f.read()
    at = 0
    while at < len(data):
      (length,) = struct.unpack("Q", data[at : at + 8])
      events.append(Event.FromString(data[at + 12 : at + 12 + length]))
      at += 12 + length + 4  # length, its crc, the record, its crc
  return events


def scalars(events):
  return [(e.step, v.tag, round(v.simple_value, 6)) for e in events for v in e.summary.value]


def test_events_hold_each_scalar_at_its_step_and_a_resume_purges_later_steps(tmp_path):
  writer = writers.MetricWriter(str(tmp_path), console=None)
  writer.write(10, {"loss": 2.5, "acc": 0.25})
  writer.write(20, {"loss": 1.5, "acc": 0.5})
  writer.close()
  events = read_events(str(tmp_path / "tensorboard"))
  assert scalars(events) == [(10, "acc", 0.25), (10, "loss", 2.5), (20, "acc", 0.5), (20, "loss", 1.5)]

  resumed = writers.MetricWriter(str(tmp_path), console=None, start_step=10)
  resumed.write(20, {"loss": 1.0, "acc": 0.75})
  resumed.close()
  events = read_events(str(tmp_path / "tensorboard"))
  starts = [e.step for e in events if e.session_log.status == e.session_log.START]
  assert starts == [10]  # TensorBoard hides the first file's events at steps >= 10
  assert scalars(events)[-2:] == [(20, "acc", 0.75), (20, "loss", 1.0)]
  assert [r["step"] for r in writers.read_metrics(str(tmp_path))] == [10, 20]


def disk_full(*args, **kwargs):
  raise OSError(28, "No space left on device")


def test_a_full_disk_while_writing_events_is_one_line_naming_the_step(tmp_path, monkeypatch):
  writer = writers.MetricWriter(str(tmp_path), console=None)
  monkeypatch.setattr(writers.EventsWriter, "write_event", disk_full)
  message = r"^writing the metrics of step 7 to .*metrics.jsonl failed \(No space left on device\)$"
  with pytest.raises(OSError, match=message):
    writer.write(7, {"loss": 1.0})


def test_a_run_whose_disk_fills_stops_in_one_line_and_keeps_its_checkpoint(tmp_path, monkeypatch):
  config = bnnjax.base_config()
  config.data.name = "digits"
  config.model.name = "mlp"
  config.model.hidden_sizes = (16,)
  config.batch_size, config.num_steps = 32, 40
  config.eval_every = config.checkpoint_every = config.log_every = 20
  config.progress_bar = False
  workdir = str(tmp_path / "run")
  calls = []

  def full_after_step_20(self, step, scalars_):
    calls.append(step)
    if step > 20:
      disk_full()

  monkeypatch.setattr(writers.EventFile, "write", full_after_step_20)
  with pytest.raises(OSError, match=r"No space left on device\)$") as error:
    bnnjax.fit(config, workdir)
  assert "\n" not in str(error.value)
  manager = checkpoint.make_manager(workdir, create=False)
  assert manager.latest_step() == 20  # the failing write is step 40's
