"""Model zoo shapes and the conv-4 family's configurations."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metajax.models import MLP, Conv4


@pytest.mark.parametrize("shape,filters,downsample,features", [
    ((28, 28, 1), 64, "maxpool", 64),        # Omniglot, ProtoNets / torch reference
    ((84, 84, 3), 32, "maxpool", 32 * 5 * 5),  # mini-ImageNet (MAML: 32 filters)
    ((28, 28, 1), 8, "stride", 8 * 2 * 2),   # MAML's strided Omniglot net
])
def test_conv4_feature_sizes(shape, filters, downsample, features):
  net = Conv4(num_outputs=None, filters=filters, downsample=downsample)
  x = jnp.zeros((2,) + shape)
  params = jax.eval_shape(net.init, jax.random.PRNGKey(0), x)
  out = jax.eval_shape(net.apply, params, x)
  assert out.shape == (2, features)
  head = Conv4(num_outputs=5, filters=filters, downsample=downsample)
  p = jax.eval_shape(head.init, jax.random.PRNGKey(0), x)
  assert p["params"]["head"]["kernel"].shape == (features, 5)
  assert p["params"]["norm0"]["scale"].shape == (filters,)


def test_conv4_pooled_features_are_the_spatial_mean():
  x = jax.random.normal(jax.random.PRNGKey(1), (3, 84, 84, 3))
  flat = Conv4(num_outputs=None, filters=4)
  pooled = Conv4(num_outputs=None, filters=4, features="pool")
  params = flat.init(jax.random.PRNGKey(0), x)  # the same parameter tree
  f = flat.apply(params, x).reshape(3, 5, 5, 4)
  g = pooled.apply(params, x)
  assert g.shape == (3, 4)
  np.testing.assert_allclose(g, f.mean(axis=(1, 2)), rtol=1e-5, atol=1e-6)
  head = Conv4(num_outputs=5, filters=4, features="pool")
  p = jax.eval_shape(head.init, jax.random.PRNGKey(0), x)
  assert p["params"]["head"]["kernel"].shape == (4, 5)
  with pytest.raises(ValueError, match="unknown features"):
    Conv4(features="max").init(jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 1)))


def test_conv4_bad_input_and_options():
  with pytest.raises(ValueError, match=r"expects \(N, H, W, C\)"):
    Conv4().init(jax.random.PRNGKey(0), jnp.zeros((2, 28, 28)))
  with pytest.raises(ValueError, match="unknown downsample"):
    Conv4(downsample="avg").init(jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 1)))
  with pytest.raises(ValueError, match="unknown norm policy"):
    Conv4(norm="layer").init(jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 1)))
  with pytest.raises(ValueError, match="too small for 4 downsampling blocks"):
    Conv4().init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 1)))
  p = Conv4(3, filters=2, norm="none", blocks=2).init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 1)))
  assert "norm0" not in p["params"]


def test_mlp_shapes():
  net = MLP((40, 40), 1)
  p = net.init(jax.random.PRNGKey(0), jnp.zeros((3, 1)))
  assert net.apply(p, jnp.zeros((7, 1))).shape == (7, 1)
  assert p["params"]["dense0"]["kernel"].shape == (1, 40)


@pytest.mark.parametrize("downsample", ["maxpool", "stride"])
def test_conv4_torch_legacy_init_is_pytorch_before_1_0(downsample):
  from scipy import stats
  x = jnp.zeros((2, 28, 28, 1))
  key = jax.random.PRNGKey(3)
  legacy = Conv4(5, filters=64, downsample=downsample, norm="running",
                 conv_init="torch_legacy").init(key, x)["params"]
  flax_default = Conv4(5, filters=64, downsample=downsample,
                       norm="running").init(key, x)["params"]
  for i, cin in enumerate([1, 64, 64, 64]):
    bound = 1 / np.sqrt(9 * cin)
    for name in ("kernel", "bias"):
      v = np.asarray(legacy[f"conv{i}"][name]).ravel() / bound
      assert np.all(np.abs(v) <= 1) and np.std(v) > 0.3
      if v.size > 1000:  # U(-1, 1) after scaling, not a normal
        assert stats.kstest(v, "uniform", args=(-1, 2)).pvalue > 1e-3
    scale = np.asarray(legacy[f"norm{i}"]["scale"])
    assert np.all((scale >= 0) & (scale < 1)) and 0.3 < scale.mean() < 0.7
    np.testing.assert_array_equal(legacy[f"norm{i}"]["bias"], 0)
    # flax's defaults: LeCun-normal kernel, zero bias, unit scale.
    k = np.asarray(flax_default[f"conv{i}"]["kernel"]).ravel()
    if k.size > 1000:
      assert abs(np.std(k) * np.sqrt(9 * cin) - 1) < 0.05
    np.testing.assert_array_equal(flax_default[f"conv{i}"]["bias"], 0)
    np.testing.assert_array_equal(flax_default[f"norm{i}"]["scale"], 1)
  # The head follows head_init, whatever the blocks' initialisation.
  np.testing.assert_array_equal(legacy["head"]["kernel"],
                                flax_default["head"]["kernel"])
  with pytest.raises(ValueError, match="unknown conv_init 'torch'"):
    Conv4(5, conv_init="torch").init(key, x)
