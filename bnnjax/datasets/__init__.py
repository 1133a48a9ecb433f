"""TFDS builders for the IDX image sets and the cache of their prepared records.

`prepared_builder(name, manual_dir)` prepares once (array_record) and reuses;
`read_split(builder, split)` returns the whole split (tfds slices allowed) as
numpy arrays. Nothing here imports TensorFlow.
"""

from bnnjax.datasets.idx import (
  IDX_FILES,
  IMAGE_SHAPE,
  BnnjaxFashionMnist,
  BnnjaxKmnist,
  BnnjaxMnist,
  IdxBuilder,
  available_splits,
  idx_count,
  read_idx,
  split_files,
)
from bnnjax.datasets.prepared import (
  BUILDERS,
  DownloadUnavailable,
  cache_root,
  prepared_builder,
  read_split,
  source_key,
)

__all__ = [
  "IDX_FILES",
  "IMAGE_SHAPE",
  "BnnjaxFashionMnist",
  "BnnjaxKmnist",
  "BnnjaxMnist",
  "IdxBuilder",
  "DownloadUnavailable",
  "available_splits",
  "idx_count",
  "read_idx",
  "split_files",
  "BUILDERS",
  "cache_root",
  "prepared_builder",
  "read_split",
  "source_key",
]
