"""Shifted images, generated in code: rotations and corruptions at graded severities.

Pure numpy, deterministic for a given seed. Images are [N, H, W] or [N, H, W, C] with pixels
in [0, 1] (an MNIST-family split as bnnjax.data loads it); every function returns float32
images of the same shape, clipped to [0, 1].

Rotation (Ovadia et al. 2019's protocol): every image turned counter-clockwise about its
centre by one angle, ROTATION_ANGLES = 0°, 15°, ..., 180°.

Corruptions in the spirit of MNIST-C (Mu & Gilmer 2019), which has one severity each; the
five severities here are ours. Per-image random choices (directions, signs, noise) are drawn
from numpy's default_rng(seed) in the same order at every severity, so an image's corruption
only grows with the severity. The parameter at severities 1..5 (SEVERITIES[name]):

  shot_noise      photons at full intensity λ: x' = Poisson(λ (x + 0.1)) / λ − 0.1 (a dim
                  background, so the black MNIST border is noisy too)   λ = 60, 25, 10, 4, 2
  impulse_noise   fraction of pixels set to 0 or 1 (half each)          0.03, 0.06, 0.1, 0.17, 0.27
  gaussian_noise  std of added N(0, σ²) noise                           0.05, 0.1, 0.2, 0.3, 0.45
  motion_blur     length in pixels of a line blur at a random angle      2, 4, 6, 9, 12
  translate       shift in pixels in a random direction (rounded to whole pixels)   1, 2, 3, 4, 5
  shear           horizontal shear factor, random sign: x' = x ± s·y    0.2, 0.35, 0.5, 0.7, 0.9
  scale           zoom factor about the centre (< 1 shrinks)            0.9, 0.8, 0.7, 0.6, 0.5
  brightness      added to every pixel                                   0.05, 0.1, 0.2, 0.3, 0.45
  stripes         vertical lines of intensity 1, width 1, random columns 1, 2, 3, 4, 6
  fog             amplitude of a smooth random field in [0, 1], added    0.1, 0.2, 0.35, 0.5, 0.7
  contrast        factor about the image mean: x' = m + c (x − m)        0.6, 0.45, 0.3, 0.2, 0.1

`measure` in the severity table of docs/results.md: what each costs a deterministic MLP.
"""

import difflib
import math
from typing import Callable, Dict, Tuple

import numpy as np

ROTATION_ANGLES = tuple(range(0, 181, 15))
SEVERITY_LEVELS = (1, 2, 3, 4, 5)
SEVERITIES: Dict[str, Tuple[float, ...]] = {
  "shot_noise": (60.0, 25.0, 10.0, 4.0, 2.0),
  "impulse_noise": (0.03, 0.06, 0.1, 0.17, 0.27),
  "gaussian_noise": (0.05, 0.1, 0.2, 0.3, 0.45),
  "motion_blur": (2.0, 4.0, 6.0, 9.0, 12.0),
  "translate": (1.0, 2.0, 3.0, 4.0, 5.0),
  "shear": (0.2, 0.35, 0.5, 0.7, 0.9),
  "scale": (0.9, 0.8, 0.7, 0.6, 0.5),
  "brightness": (0.05, 0.1, 0.2, 0.3, 0.45),
  "stripes": (1.0, 2.0, 3.0, 4.0, 6.0),
  "fog": (0.1, 0.2, 0.35, 0.5, 0.7),
  "contrast": (0.6, 0.45, 0.3, 0.2, 0.1),
}
CORRUPTIONS = tuple(SEVERITIES)


# ---------------------------------------------------------------- input checks


def _as_nhwc(images) -> Tuple[np.ndarray, tuple]:
  """float64 [N, H, W, C] and the original shape ([N, H, W] or [N, H, W, C])."""
  x = np.asarray(images, np.float64)
  if x.ndim == 3:
    return x[..., None], x.shape
  if x.ndim == 4:
    return x, x.shape
  raise ValueError(f"expected images [N, H, W] or [N, H, W, C], got shape {x.shape}")


def _out(x: np.ndarray, shape: tuple) -> np.ndarray:
  return np.clip(x, 0.0, 1.0).astype(np.float32).reshape(shape)


def check_angle(angle) -> float:
  """An angle in degrees in [0, 360): a one-line ValueError otherwise."""
  if isinstance(angle, bool) or not isinstance(angle, (int, float, np.integer, np.floating)):
    raise ValueError(f"rotation angle must be a number of degrees in [0, 360), got {angle!r}")
  if not 0.0 <= float(angle) < 360.0:
    raise ValueError(f"rotation angle must be in [0, 360) degrees, got {angle!r}")
  return float(angle)


def check_corruption(name: str) -> str:
  """A known corruption name: a one-line ValueError naming the closest one otherwise."""
  if name in SEVERITIES:
    return name
  close = difflib.get_close_matches(str(name), CORRUPTIONS, n=1, cutoff=0.5)
  hint = f"; did you mean {close[0]!r}?" if close else f"; valid: {', '.join(CORRUPTIONS)}"
  raise ValueError(f"unknown corruption {name!r}{hint}")


def check_severity(severity) -> int:
  """An integer severity in 1..5: a one-line ValueError otherwise."""
  if (
    isinstance(severity, bool)
    or not isinstance(severity, (int, np.integer))
    or severity not in SEVERITY_LEVELS
  ):
    raise ValueError(f"corruption severity must be an integer in 1-5, got {severity!r}")
  return int(severity)


# ---------------------------------------------------------------- geometry


def _warp(x: np.ndarray, matrix: np.ndarray, offset: np.ndarray) -> np.ndarray:
  """Bilinear resampling of x [N, H, W, C], zeros outside.

  Coordinates are centred with y pointing up: (u, v) = (col − (W−1)/2, (H−1)/2 − row). The
  output at (u, v) reads the input at matrix[n] @ (u, v) + offset[n] (matrix [N, 2, 2],
  offset [N, 2]): the inverse of the motion the image undergoes.
  """
  n, h, w, _ = x.shape
  rows, cols = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij")
  uv = np.stack([cols - (w - 1) / 2, (h - 1) / 2 - rows])  # [2, H, W]
  src = np.einsum("nij,jhw->nihw", matrix, uv) + offset[:, :, None, None]  # [N, 2, H, W]
  src_c, src_r = src[:, 0] + (w - 1) / 2, (h - 1) / 2 - src[:, 1]
  r0, c0 = np.floor(src_r), np.floor(src_c)
  fr, fc = src_r - r0, src_c - c0
  out = np.zeros_like(x)
  index = np.arange(n)[:, None, None]
  for dr, wr in ((0, 1 - fr), (1, fr)):
    for dc, wc in ((0, 1 - fc), (1, fc)):
      r, c = (r0 + dr).astype(np.int64), (c0 + dc).astype(np.int64)
      inside = (r >= 0) & (r < h) & (c >= 0) & (c < w)
      values = x[index, np.clip(r, 0, h - 1), np.clip(c, 0, w - 1)]  # [N, H, W, C]
      out += (wr * wc * inside)[..., None] * values
  return out


def _batch(matrix, n: int) -> np.ndarray:
  return np.broadcast_to(np.asarray(matrix, np.float64), (n, 2, 2)).copy()


def rotate(images, angle) -> np.ndarray:
  """Every image turned counter-clockwise by `angle` degrees in [0, 360) about its centre."""
  theta = math.radians(check_angle(angle))
  x, shape = _as_nhwc(images)
  c, s = math.cos(theta), math.sin(theta)
  return _out(_warp(x, _batch([[c, s], [-s, c]], len(x)), np.zeros((len(x), 2))), shape)


def translate(images, offsets) -> np.ndarray:
  """Image n moved by offsets[n] = (right, up) pixels [N, 2] (whole pixels move exactly)."""
  x, shape = _as_nhwc(images)
  offsets = np.broadcast_to(np.asarray(offsets, np.float64), (len(x), 2))
  return _out(_warp(x, _batch(np.eye(2), len(x)), -offsets), shape)


def shear(images, factors) -> np.ndarray:
  """Horizontal shear: the pixel at (u, v) (centred, v up) moves to (u + s_n v, v); factors [N] or scalar."""
  x, shape = _as_nhwc(images)
  s = np.broadcast_to(np.asarray(factors, np.float64), (len(x),))
  matrix = np.zeros((len(x), 2, 2))
  matrix[:, 0, 0], matrix[:, 0, 1], matrix[:, 1, 1] = 1.0, -s, 1.0
  return _out(_warp(x, matrix, np.zeros((len(x), 2))), shape)


def zoom(images, factor: float) -> np.ndarray:
  """Images scaled by `factor` about their centre (< 1 shrinks)."""
  x, shape = _as_nhwc(images)
  return _out(_warp(x, _batch(np.eye(2) / factor, len(x)), np.zeros((len(x), 2))), shape)


def motion_blur(images, length: float, angles) -> np.ndarray:
  """The mean of each image moved along a line of `length` pixels through 0 at angles[n] (radians).

  round(length) + 1 copies one pixel apart (for a whole length); the ink inside the frame is kept.
  """
  x, shape = _as_nhwc(images)
  angles = np.broadcast_to(np.asarray(angles, np.float64), (len(x),))
  direction = np.stack([np.cos(angles), np.sin(angles)], axis=-1)  # [N, 2]
  taps = np.linspace(-length / 2, length / 2, int(round(length)) + 1)
  eye = _batch(np.eye(2), len(x))
  return _out(np.mean([_warp(x, eye, -t * direction) for t in taps], axis=0), shape)


def smooth_field(rng: np.random.Generator, n: int, h: int, w: int) -> np.ndarray:
  """[N, H, W] smooth random fields in [0, 1]: uniform noise on 3x3, 5x5 and 9x9 grids,
  bilinearly upsampled, weighted 1, 1/2, 1/4, each image's field rescaled to span [0, 1]."""
  total = np.zeros((n, h, w))
  for size, weight in ((3, 1.0), (5, 0.5), (9, 0.25)):
    total += weight * _stretch(rng.random((n, size, size)), h, w)
  lo, hi = total.min(axis=(1, 2), keepdims=True), total.max(axis=(1, 2), keepdims=True)
  return (total - lo) / np.maximum(hi - lo, 1e-12)


def _stretch(grid: np.ndarray, h: int, w: int) -> np.ndarray:
  """A small grid [N, g, g] bilinearly stretched over an H x W frame (corners on corners), [N, H, W]."""
  g = grid.shape[1]
  rows, cols = np.meshgrid(np.arange(h) * (g - 1) / (h - 1), np.arange(w) * (g - 1) / (w - 1), indexing="ij")
  r0, c0 = np.minimum(np.floor(rows).astype(int), g - 2), np.minimum(np.floor(cols).astype(int), g - 2)
  fr, fc = rows - r0, cols - c0
  return (
    grid[:, r0, c0] * (1 - fr) * (1 - fc)
    + grid[:, r0 + 1, c0] * fr * (1 - fc)
    + grid[:, r0, c0 + 1] * (1 - fr) * fc
    + grid[:, r0 + 1, c0 + 1] * fr * fc
  )


# ---------------------------------------------------------------- corruptions


def _shot_noise(x, p, rng):
  return rng.poisson(p * (x + 0.1)) / p - 0.1


def _impulse_noise(x, p, rng):
  u, salt = rng.random(x.shape), rng.random(x.shape) < 0.5
  return np.where(u < p, salt.astype(np.float64), x)


def _gaussian_noise(x, p, rng):
  return x + p * rng.standard_normal(x.shape)


def _motion_blur(x, p, rng):
  return motion_blur(x, p, rng.uniform(0, 2 * np.pi, len(x)))


def _translate(x, p, rng):
  phi = rng.uniform(0, 2 * np.pi, len(x))
  return translate(x, np.round(p * np.stack([np.cos(phi), np.sin(phi)], axis=-1)))


def _shear(x, p, rng):
  return shear(x, p * rng.choice([-1.0, 1.0], len(x)))


def _scale(x, p, rng):
  del rng
  return zoom(x, p)


def _brightness(x, p, rng):
  del rng
  return x + p


def _stripes(x, p, rng):
  w = x.shape[2]
  columns = np.argsort(rng.random((len(x), w)), axis=1)[:, : int(p)]  # distinct random columns
  mask = np.zeros((len(x), w), bool)
  np.put_along_axis(mask, columns, True, axis=1)
  return np.where(mask[:, None, :, None], 1.0, x)


def _fog(x, p, rng):
  return x + p * smooth_field(rng, len(x), x.shape[1], x.shape[2])[..., None]


def _contrast(x, p, rng):
  del rng
  mean = x.mean(axis=(1, 2, 3), keepdims=True)
  return mean + p * (x - mean)


_CORRUPT: Dict[str, Callable] = {
  "shot_noise": _shot_noise,
  "impulse_noise": _impulse_noise,
  "gaussian_noise": _gaussian_noise,
  "motion_blur": _motion_blur,
  "translate": _translate,
  "shear": _shear,
  "scale": _scale,
  "brightness": _brightness,
  "stripes": _stripes,
  "fog": _fog,
  "contrast": _contrast,
}


def corrupt(images, name: str, severity: int, seed: int = 0) -> np.ndarray:
  """The images under corruption `name` at `severity` 1..5 (see the module doc), seeded.

  Args:
    images: [N, H, W] or [N, H, W, C], pixels in [0, 1].
    name: one of CORRUPTIONS.
    severity: an integer in 1..5.
    seed: of numpy's default_rng for the per-image random choices.
  Returns:
    float32 images of the input's shape, in [0, 1].
  """
  name, severity = check_corruption(name), check_severity(severity)
  x, shape = _as_nhwc(images)
  rng = np.random.default_rng(seed)
  return _out(_CORRUPT[name](x, SEVERITIES[name][severity - 1], rng), shape)


def intensities(family: str) -> Tuple:
  """The intensities of a shift family: ROTATION_ANGLES for "rotate", SEVERITY_LEVELS for a
  corruption "corrupt:<name>"; the intensity 0 (no shift) comes first for corruptions too."""
  kind, _ = parse_family(family)
  return ROTATION_ANGLES if kind == "rotate" else (0,) + SEVERITY_LEVELS


def parse_family(family: str) -> Tuple[str, str]:
  """("rotate", "") or ("corrupt", name) from "rotate" / "corrupt:<name>"; a one-line ValueError."""
  if family == "rotate":
    return "rotate", ""
  kind, _, name = str(family).partition(":")
  if kind != "corrupt" or not name:
    raise ValueError(
      f"unknown shift {family!r}; valid: 'rotate' or 'corrupt:<name>', name one of {', '.join(CORRUPTIONS)}"
    )
  return "corrupt", check_corruption(name)


def shifted(images, family: str, intensity, seed: int = 0) -> np.ndarray:
  """The images at one intensity of a family: rotate by `intensity` degrees, or corrupt at
  severity `intensity` (0 = the images unchanged)."""
  kind, name = parse_family(family)
  if kind == "rotate":
    return rotate(images, intensity)
  if intensity == 0:
    x, shape = _as_nhwc(images)
    return _out(x, shape)
  return corrupt(images, name, intensity, seed)
