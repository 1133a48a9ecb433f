"""TFDS builders for the 28x28 IDX data sets (MNIST, Fashion-MNIST, KMNIST) that
prepare without TensorFlow.

The stock `tfds.builder("mnist")` needs TensorFlow to prepare (its gzip
extraction, file reader and PNG encoder). These builders read the gzip IDX files
with `gzip` + numpy and store the image as a raw `Tensor` feature, so preparing
and reading back (`builder.as_data_source`, array_record) never import it.

Name clash: the stock catalogue already registers "mnist", "fashion_mnist" and
"kmnist", and TFDS registers a builder under its snake_case class name, so ours
are `BnnjaxMnist` -> "bnnjax_mnist", `BnnjaxFashionMnist` -> "bnnjax_fashion_mnist"
and `BnnjaxKmnist` -> "bnnjax_kmnist". The base class skips registration.

Where the files come from: if the download manager's manual dir holds IDX
files, they are read from there (offline); otherwise the official files are
fetched with `dl_manager.download` (never `download_and_extract`, which uses TF).
"""

import gzip
import zlib
import os
from typing import Dict, Iterator, Tuple

import numpy as np
import tensorflow_datasets as tfds

IMAGE_SHAPE = (28, 28, 1)
# IDX magic numbers: 0x08 = unsigned byte, last byte = number of dimensions.
_IMAGES_MAGIC = 0x00000803
_LABELS_MAGIC = 0x00000801

# tfds split name -> (images file, labels file), the names of the original distribution.
IDX_FILES: Dict[str, Tuple[str, str]] = {
  "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
  "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def read_idx(path: os.PathLike) -> np.ndarray:
  """Reads a gzip IDX file of unsigned bytes into an array of its stated shape."""
  try:
    with gzip.open(path, "rb") as f:
      content = f.read()
  except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
    raise ValueError(
      f"{path} is not a readable gzip file ({e.__class__.__name__}: {e}); download it again"
    ) from None
  magic = int.from_bytes(content[:4], "big")
  if magic not in (_IMAGES_MAGIC, _LABELS_MAGIC):
    raise ValueError(f"{path} is not an unsigned-byte IDX file (magic {magic:#010x})")
  ndim = magic & 0xFF
  shape = tuple(int.from_bytes(content[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
  body = content[4 + 4 * ndim :]
  if len(body) != int(np.prod(shape)):
    raise ValueError(f"{path} holds {len(body)} bytes of data, its header says {shape}")
  return np.frombuffer(body, dtype=np.uint8).reshape(shape)


def idx_count(path: os.PathLike) -> int:
  """The number of items an IDX file's header announces (reads only the header)."""
  try:
    with gzip.open(path, "rb") as f:
      header = f.read(8)
  except (OSError, EOFError, zlib.error) as e:
    raise ValueError(
      f"{path} is not a readable gzip file ({e.__class__.__name__}: {e}); download it again"
    ) from None
  return int.from_bytes(header[4:8], "big")


def split_files(folder: os.PathLike, split: str) -> Tuple[str, str]:
  """Paths of (images, labels) for `split` in `folder`; existence is not checked."""
  return tuple(os.path.join(os.fspath(folder), name) for name in IDX_FILES[split])


def available_splits(folder: os.PathLike) -> Tuple[str, ...]:
  """Splits whose images and labels files are both in `folder`."""
  return tuple(s for s in IDX_FILES if all(os.path.isfile(p) for p in split_files(folder, s)))


class IdxBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Base builder: one 28x28 grey image (uint8) and one of 10 labels per example."""

  VERSION = tfds.core.Version("1.1.0")
  RELEASE_NOTES = {
    "1.0.0": "IDX files read with gzip + numpy; uint8 tensor images (int64_list).",
    "1.1.0": "Images stored as 784 raw bytes (Encoding.BYTES): several times faster to read.",
  }
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
    "Put the gzip IDX files (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
    "t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz) in the manual dir. "
    "A split whose two files are missing is not prepared."
  )
  URL = ""  # folder of the official .gz files, ending in "/"
  HOMEPAGE = ""
  LABEL_NAMES: Tuple[str, ...] = ()

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
      builder=self,
      description=self.__doc__,
      features=tfds.features.FeaturesDict(
        {
          # BYTES: one 784-byte string per image instead of 784 varints.
          "image": tfds.features.Tensor(
            shape=IMAGE_SHAPE, dtype=np.uint8, encoding=tfds.features.Encoding.BYTES
          ),
          "label": tfds.features.ClassLabel(names=list(self.LABEL_NAMES)),
        }
      ),
      supervised_keys=("image", "label"),
      homepage=self.HOMEPAGE,
    )

  def _split_generators(self, dl_manager):
    files = self._local_files(dl_manager)
    if files is None:  # nothing local: fetch the official files (plain download, no TF)
      urls = {split: [self.URL + name for name in names] for split, names in IDX_FILES.items()}
      files = dl_manager.download(urls)
    return {split: self._generate_examples(*paths) for split, paths in files.items()}

  def _local_files(self, dl_manager):
    """{split: (images, labels)} from the manual dir, or None where it has no IDX files."""
    try:
      manual_dir = dl_manager.manual_dir
    except AssertionError:  # tfds: the manual dir does not exist or is empty
      return None
    splits = available_splits(manual_dir)
    if not splits:
      looked_for = [p for s in IDX_FILES for p in split_files(manual_dir, s)]
      raise FileNotFoundError(f"no IDX split in {manual_dir}; looked for {looked_for}")
    return {split: split_files(manual_dir, split) for split in splits}

  def _generate_examples(self, images_path, labels_path) -> Iterator:
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.shape[1:] != IMAGE_SHAPE[:2] or len(images) != len(labels):
      raise ValueError(
        f"{images_path} {images.shape} does not match {labels_path} "
        f"{labels.shape}: expected N x 28 x 28 images and N labels"
      )
    for i, (image, label) in enumerate(zip(images[..., None], labels)):
      yield i, {"image": image, "label": int(label)}  # key i = row in the IDX file


class BnnjaxMnist(IdxBuilder):
  """MNIST handwritten digits 0-9 (LeCun & Cortes), 60k train / 10k test."""

  URL = "https://storage.googleapis.com/cvdf-datasets/mnist/"
  HOMEPAGE = "http://yann.lecun.com/exdb/mnist/"
  LABEL_NAMES = tuple(str(d) for d in range(10))


class BnnjaxFashionMnist(IdxBuilder):
  """Fashion-MNIST Zalando article images (Xiao et al. 2017), 60k train / 10k test."""

  URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
  HOMEPAGE = "https://github.com/zalandoresearch/fashion-mnist"
  LABEL_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
  )


class BnnjaxKmnist(IdxBuilder):
  """Kuzushiji-MNIST cursive hiragana (Clanuwat et al. 2018), 60k train / 10k test."""

  URL = "http://codh.rois.ac.jp/kmnist/dataset/kmnist/"
  HOMEPAGE = "https://github.com/rois-codh/kmnist"
  LABEL_NAMES = ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo")
