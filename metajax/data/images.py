"""Image files to numpy: the one decoder every loader shares.

Omniglot's PNGs, mini-/tieredImageNet's JPEGs and PNGs and Lake's one-shot
runs all arrive as encoded bytes (zip members, pickled blobs, files).
Decoding them in one place gives every loader the same PIL conversion, the
same ``ValueError`` naming the broken file (PIL itself raises a dozen
exception types for truncated or foreign data), and the two resize
conventions of the code base side by side, so a loader picks one by name
instead of re-implementing it:

* **PIL filters on uint8 images** (:func:`decode_image` with ``size``,
  :func:`pil_resize`; Lanczos by default, as Ravi & Larochelle's
  mini-ImageNet tools): natural images, which stay uint8.
* **``jax.image.resize`` semantics on float images** (:func:`resize`,
  :func:`resize_ink`): Omniglot and Lake's runs, whose ink images must match
  a ``jax.image.resize`` of the full-size arrays whichever source (zip, npz,
  TFDS) they came from. It runs as ``A @ X @ B^T`` in numpy with the
  matrices of :func:`resize_matrix`, so all 32,460 Omniglot images resize in
  seconds without putting them on a device.

Omniglot and Lake's runs are black strokes on white paper;
:func:`to_ink` turns such a page into ink = 1, background = 0, the
convention of :class:`metajax.data.omniglot.OmniglotData`.
"""
from __future__ import annotations

import functools
import io

import numpy as np

#: the PIL modes :func:`decode_image` converts to: grayscale or RGB.
MODES = ("L", "RGB")


def _pil():
  """PIL's ``Image`` module, imported when an image file is decoded: the
  npz and pickle paths (and accelerator images without Pillow) never need
  it."""
  try:
    from PIL import Image
  except ImportError as e:
    raise ImportError("decoding or resizing image files needs Pillow "
                      "(pip install pillow)") from e
  return Image


def _hw(size) -> tuple[int, int]:
  """``(h, w)`` from a side ``h`` (square) or an ``(h, w)`` pair."""
  h, w = (size, size) if np.isscalar(size) else tuple(size)
  if h < 1 or w < 1:
    raise ValueError(f"image size must be positive, got {(h, w)}")
  return int(h), int(w)


def _pil_resize(im, hw: tuple[int, int], resample):
  # PIL sizes are (width, height); an image already at size is left untouched
  # so that no filter ever touches pixels that need no resampling.
  h, w = hw
  if resample is None:
    resample = _pil().Resampling.LANCZOS
  return im if im.size == (w, h) else im.resize((w, h), resample)


def decode_image(data: bytes, where: str, *, mode: str = "L", size=None,
                 resample=None) -> np.ndarray:
  """Decodes an encoded image (PNG, JPEG, GIF, BMP, ...) to uint8 pixels.

  Args:
    data: the file's bytes.
    where: the file's name for error messages (``'a.zip:x/y.png'``).
    mode: ``'L'`` (grayscale, ``(H, W)``) or ``'RGB'`` (``(H, W, 3)``); PIL
      converts palette, bilevel, alpha and 16-bit images.
    size: resize to ``h`` (square) or ``(h, w)`` with the PIL filter
      ``resample``; ``None`` (or the image's own size) keeps the pixels.
    resample: a ``PIL.Image.Resampling`` filter (``None``: Lanczos).

  Returns:
    ``(H, W)`` or ``(H, W, 3)`` uint8.

  Raises:
    ValueError: ``"{where} is not a readable image (...)"`` for bytes PIL
      cannot decode (truncated, corrupt, not an image); also an unknown
      ``mode`` or a non-positive ``size``.
  """
  if mode not in MODES:
    raise ValueError(f"unknown image mode {mode!r}; choose from {MODES}")
  hw = None if size is None else _hw(size)
  image = _pil()  # outside the try: a missing Pillow is no broken file
  try:
    with image.open(io.BytesIO(data)) as im:
      im = im.convert(mode)
      if hw is not None:
        im = _pil_resize(im, hw, resample)
      return np.asarray(im, np.uint8)
  except Exception as e:  # PIL raises many types for broken files
    raise ValueError(f"{where} is not a readable image ({e})") from e


def pil_resize(images: np.ndarray, size, *, resample=None) -> np.ndarray:
  """Resizes uint8 ``(N, H, W)`` or ``(N, H, W, 3)`` images with a PIL filter.

  The same filter as :func:`decode_image`'s ``size``, for sources that ship
  decoded arrays (pickles, npz) rather than files. ``size`` is ``h`` or
  ``(h, w)``; images already at that size come back unchanged (as uint8).
  """
  images = np.asarray(images)
  hw = _hw(size)
  if images.shape[1:3] == hw:
    return images.astype(np.uint8, copy=False)
  return np.stack([
      np.asarray(_pil_resize(_pil().fromarray(np.asarray(x, np.uint8)), hw,
                             resample)) for x in images])


@functools.lru_cache(maxsize=32)
def resize_matrix(n_in: int, n_out: int, method: str = "linear",
                  antialias: bool = True) -> np.ndarray:
  """``(n_out, n_in)`` matrix ``A`` with ``resize(x)[i] = sum_j A[i, j] x[j]``.

  The rows of ``jax.image.resize`` applied to the identity, so resizing with
  it matches ``jax.image.resize(x, ..., method, antialias)`` exactly.
  """
  import jax  # lazily: decoding alone should not need a JAX backend
  import jax.numpy as jnp
  eye = jnp.eye(n_in, dtype=jnp.float32)
  return np.asarray(jax.image.resize(eye, (n_out, n_in), method=method,
                                     antialias=antialias), np.float32)


def resize(images: np.ndarray, size, *, method: str = "linear",
           antialias: bool = True) -> np.ndarray:
  """Resizes ``(..., H, W)`` float images to ``(..., h, w)``.

  ``jax.image.resize`` semantics (separable ``method`` kernel, antialiased
  when shrinking). ``size`` is ``h`` (square) or ``(h, w)``; ``None`` or the
  current size returns the images unchanged (as float32).
  """
  images = np.asarray(images, np.float32)
  h_in, w_in = images.shape[-2:]
  if size is None:
    return images
  h, w = (size, size) if np.isscalar(size) else tuple(size)
  if (h, w) == (h_in, w_in):
    return images
  if h < 1 or w < 1:
    raise ValueError(f"image size must be positive, got {(h, w)}")
  a = resize_matrix(h_in, h, method, antialias)
  b = resize_matrix(w_in, w, method, antialias)
  return np.matmul(np.matmul(a, images), b.T)


def to_ink(gray: np.ndarray) -> np.ndarray:
  """Ink image in [0, 1] (1 = stroke) from a grayscale or bool page image.

  ``gray`` is uint8 (0 = black ink, 255 = white paper, as decoded by
  :func:`decode_image`) or bool (True = paper, the bitsandscraps npz arrays).
  Returns float32 of the same shape.
  """
  g = np.asarray(gray)
  if g.dtype == bool:
    return (~g).astype(np.float32)
  return 1.0 - g.astype(np.float32) / 255.0


def resize_ink(ink: np.ndarray, size, method: str = "linear") -> np.ndarray:
  """:func:`resize` of ``(..., H, W)`` ink images, clipped to [0, 1].

  Resize weights sum to one, so values leave [0, 1] only by rounding (or a
  kernel's negative lobes); the clip keeps the ink convention exact.
  """
  return np.clip(resize(ink, size, method=method), 0.0, 1.0)
