"""Where prepared records live, and how they are keyed so that sources never mix.

Layout: <cache_root>/<source key>/bnnjax_mnist/1.0.0/... (array_record). The
source key is "download" for the official files, or "idx-<hash>" for a manual
dir, hashed from each IDX file's name, size and gzip trailer (CRC-32 and length
of the uncompressed content). So the same files in another folder reuse one
preparation, and different files (or a folder gaining a split) get their own.
After preparing or reusing, record counts are checked against the IDX headers.
"""

import contextlib
import fcntl
import hashlib
import os
import socket
import urllib.parse
import pathlib
from typing import Dict, Optional, Tuple, Type

import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.proto import tf_example_pb2

from bnnjax.datasets.idx import (
  IMAGE_SHAPE,
  BnnjaxFashionMnist,
  BnnjaxKmnist,
  BnnjaxMnist,
  IdxBuilder,
  available_splits,
  idx_count,
  split_files,
)

BUILDERS: Dict[str, Type[IdxBuilder]] = {
  "mnist": BnnjaxMnist,
  "fashion_mnist": BnnjaxFashionMnist,
  "kmnist": BnnjaxKmnist,
}


def cache_root() -> pathlib.Path:
  """$BNNJAX_TFDS_DIR, else ~/.cache/bnnjax/tfds (read at call time, so tests can redirect it)."""
  return pathlib.Path(os.environ.get("BNNJAX_TFDS_DIR") or pathlib.Path.home() / ".cache" / "bnnjax" / "tfds")


def _gzip_trailer(path: str) -> bytes:
  """The last 8 bytes of a gzip file: CRC-32 and size of the content it decompresses to."""
  with open(path, "rb") as f:
    f.seek(-8, os.SEEK_END)
    return f.read(8)


def source_key(manual_dir: Optional[os.PathLike]) -> str:
  """A folder name that identifies the raw files a preparation was made from."""
  if manual_dir is None:
    return "download"
  digest = hashlib.sha1()
  for split in available_splits(manual_dir):
    for path in split_files(manual_dir, split):
      digest.update(f"{os.path.basename(path)}:{os.path.getsize(path)}:".encode())
      digest.update(_gzip_trailer(path))
  return "idx-" + digest.hexdigest()[:16]


@contextlib.contextmanager
def _exclusive(lock_path: pathlib.Path):
  """Serialises preparation between processes that share one cache."""
  lock_path.parent.mkdir(parents=True, exist_ok=True)
  with open(lock_path, "w") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def _check_counts(builder: IdxBuilder, manual_dir: os.PathLike) -> None:
  """A prepared split must hold exactly the records its IDX files announce."""
  splits = available_splits(manual_dir)
  if sorted(builder.info.splits.keys()) != sorted(splits):
    raise ValueError(
      f"prepared splits {sorted(builder.info.splits.keys())} in {builder.data_dir} "
      f"differ from the IDX splits {sorted(splits)} in {manual_dir}; delete the cache"
    )
  for split in splits:
    expected = idx_count(split_files(manual_dir, split)[1])
    prepared = builder.info.splits[split].num_examples
    if prepared != expected:
      raise ValueError(
        f"{builder.data_dir} holds {prepared} {split} records but "
        f"{manual_dir} has {expected}; delete the cache"
      )


class DownloadUnavailable(FileNotFoundError):
  """No local files and the download host cannot be reached (e.g. an offline machine)."""


def _check_reachable(name: str, url: str, timeout: float = 5.0) -> None:
  # tfds retries an unreachable host for minutes; a plain connect fails in seconds.
  parts = urllib.parse.urlsplit(url)
  port = parts.port or (443 if parts.scheme == "https" else 80)
  try:
    socket.create_connection((parts.hostname, port), timeout=timeout).close()
  except OSError as e:
    raise DownloadUnavailable(
      f"{name}: no local IDX files (set data_dir or $BNNJAX_DATA_DIR) and {url} is "
      f"unreachable ({e.__class__.__name__}); offline?"
    ) from None


def prepared_builder(name: str, manual_dir: Optional[os.PathLike] = None) -> IdxBuilder:
  """The builder of data set `name`, prepared (once) from `manual_dir`, or downloaded if None."""
  data_dir = cache_root() / source_key(manual_dir)
  with _exclusive(data_dir / f"{name}.lock"):
    builder = BUILDERS[name](data_dir=os.fspath(data_dir), file_format="array_record")
    if manual_dir is None and not builder.is_prepared():
      _check_reachable(name, builder.URL)
    builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(
        manual_dir=None if manual_dir is None else os.fspath(manual_dir)
      )
    )
  if manual_dir is not None:
    _check_counts(builder, manual_dir)
  return builder


def read_split(builder: IdxBuilder, split: str) -> Tuple[np.ndarray, np.ndarray]:
  """(images uint8 [N, 28, 28, 1], labels int64 [N]) of a tfds split spec such as "train[:90%]".

  Records come back in their written (shuffled, fixed) order. All are fetched in
  one batched `__getitems__` call (a Python loop of `source[i]` is ~10x slower).
  They are parsed here rather than by tfds' per-record feature decoding, which
  costs ~3x more for 60k records: each record is a tf.train.Example holding the
  image as 784 raw bytes (Encoding.BYTES) and the label as one int64.
  """
  source = builder.as_data_source(split=split, deserialize_method=tfds.decode.DeserializeMethod.RAW_BYTES)
  records = source.__getitems__(range(len(source)))
  features = [tf_example_pb2.Example.FromString(r).features.feature for r in records]
  image_bytes = b"".join([f["image"].bytes_list.value[0] for f in features])
  images = np.frombuffer(image_bytes, dtype=np.uint8).reshape((-1,) + IMAGE_SHAPE)
  labels = np.array([f["label"].int64_list.value[0] for f in features], dtype=np.int64)
  return images, labels
