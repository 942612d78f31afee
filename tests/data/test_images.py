"""The shared image decoder: PNG/JPEG bytes -> uint8, ink, both resizes."""
from __future__ import annotations

import io

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from metajax.data import images, imagenet, omniglot


def encode(array: np.ndarray, fmt: str = "PNG", **kw) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(array).save(buf, format=fmt, **kw)
  return buf.getvalue()


@pytest.fixture
def rgb() -> np.ndarray:
  return np.random.default_rng(0).integers(0, 256, (30, 40, 3), np.uint8)


def test_png_round_trips_exactly_in_both_modes(rgb):
  data = encode(rgb)
  got = images.decode_image(data, "x.png", mode="RGB")
  assert got.dtype == np.uint8 and got.shape == (30, 40, 3)
  np.testing.assert_array_equal(got, rgb)
  # 'L' is PIL's own grayscale conversion (ITU-R 601-2 luma)
  gray = images.decode_image(data, "x.png")
  assert gray.dtype == np.uint8 and gray.shape == (30, 40)
  np.testing.assert_array_equal(gray, np.asarray(Image.fromarray(rgb)
                                                 .convert("L")))
  # a grayscale file decodes to itself; RGB mode repeats it three times
  g = np.random.default_rng(1).integers(0, 256, (17, 9), np.uint8)
  np.testing.assert_array_equal(images.decode_image(encode(g), "g"), g)
  np.testing.assert_array_equal(
      images.decode_image(encode(g), "g", mode="RGB"),
      np.repeat(g[..., None], 3, axis=-1))


def test_bilevel_png_decodes_to_0_and_255():
  page = np.ones((12, 12), bool)
  page[3:5, 2:9] = False
  got = images.decode_image(encode(page), "page.png")
  np.testing.assert_array_equal(got, np.where(page, 255, 0).astype(np.uint8))
  # and to ink exactly as the bool npz arrays do
  np.testing.assert_array_equal(images.to_ink(got), images.to_ink(page))


def test_jpeg_is_lossy_but_close():
  ramp = np.linspace(0, 255, 40).astype(np.uint8)
  smooth = np.ascontiguousarray(np.broadcast_to(ramp[None, :, None],
                                                (30, 40, 3)))
  got = images.decode_image(encode(smooth, "JPEG", quality=95), "x.jpg",
                            mode="RGB")
  assert got.dtype == np.uint8 and got.shape == smooth.shape
  assert np.abs(got.astype(int) - smooth).max() <= 8


def test_resize_is_pil_lanczos(rgb):
  data = encode(rgb)
  want = np.asarray(Image.fromarray(rgb).resize((20, 20),
                                                Image.Resampling.LANCZOS))
  got = images.decode_image(data, "x", mode="RGB", size=20)
  np.testing.assert_array_equal(got, want)
  # (h, w) pairs, other filters, and the same filter on decoded arrays
  got = images.decode_image(data, "x", mode="RGB", size=(10, 25),
                            resample=Image.Resampling.BILINEAR)
  np.testing.assert_array_equal(got, np.asarray(Image.fromarray(rgb).resize(
      (25, 10), Image.Resampling.BILINEAR)))
  batch = np.stack([rgb, rgb[::-1]])
  out = images.pil_resize(batch, 20)
  assert out.shape == (2, 20, 20, 3) and out.dtype == np.uint8
  np.testing.assert_array_equal(out[0], want)
  # the mini-ImageNet loaders resize arrays the same way
  np.testing.assert_array_equal(imagenet._resize_array(batch, 20), out)


def test_own_size_is_left_untouched(rgb):
  np.testing.assert_array_equal(
      images.decode_image(encode(rgb), "x", mode="RGB", size=(30, 40)), rgb)
  batch = rgb[None]
  assert images.pil_resize(batch, (30, 40)) is batch


def test_ink_and_jax_resize():
  gray = np.random.default_rng(2).integers(0, 256, (2, 105, 105), np.uint8)
  ink = images.to_ink(gray)
  assert ink.dtype == np.float32
  np.testing.assert_array_equal(ink, 1.0 - gray.astype(np.float32) / 255.0)
  for method in ("linear", "lanczos3"):
    want = jax.image.resize(jnp.asarray(ink), (2, 28, 28), method,
                            antialias=True)
    got = images.resize_ink(ink, 28, method)
    np.testing.assert_allclose(got, np.clip(want, 0, 1), atol=2e-5)
    assert got.min() >= 0 and got.max() <= 1
  np.testing.assert_array_equal(images.resize_ink(ink, None), ink)
  # Omniglot re-exports the same functions (omniglot.resize keeps working)
  assert omniglot.resize is images.resize
  assert omniglot.resize_matrix is images.resize_matrix


@pytest.mark.parametrize("data", [
    b"",
    b"definitely not an image" * 4,
    encode(np.zeros((8, 8), np.uint8))[:30],  # truncated PNG
], ids=["empty", "garbage", "truncated"])
def test_unreadable_bytes_name_the_file(data):
  want = r"^archive\.zip:a/b\.png is not a readable image \("
  with pytest.raises(ValueError, match=want):
    images.decode_image(data, "archive.zip:a/b.png")


def test_bad_arguments():
  data = encode(np.zeros((8, 8), np.uint8))
  with pytest.raises(ValueError, match="unknown image mode 'CMYK'"):
    images.decode_image(data, "x", mode="CMYK")
  with pytest.raises(ValueError, match="image size must be positive"):
    images.decode_image(data, "x", size=0)
  with pytest.raises(ValueError, match="image size must be positive"):
    images.resize(np.zeros((8, 8)), (0, 4))
