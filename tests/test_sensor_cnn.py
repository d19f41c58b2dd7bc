"""SensorCNN: shapes, the official `view` reshape, layouts, and a numpy reference forward."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mumae_jax.models.sensor_cnn import SensorCNN, to_channels_first


def _numpy_forward(x_cf, conv_w, conv_b, fc_w, fc_b):
    """Reference in PyTorch conventions: x_cf [N, C, L], conv_w [O, C, K], fc_w [out, O*T'] (torch layouts)."""
    n, c, length = x_cf.shape
    o, _, k = conv_w.shape
    lo = length - k + 1
    y = np.zeros((n, o, lo))
    for b in range(n):
        for oc in range(o):
            for t in range(lo):
                y[b, oc, t] = np.sum(conv_w[oc] * x_cf[b, :, t:t + k]) + conv_b[oc]
    y = np.maximum(y, 0)
    tp = lo // 2
    y = y[:, :, :2 * tp].reshape(n, o, tp, 2).max(-1)  # MaxPool1d(2)
    flat = y.reshape(n, -1)  # torch view(N, -1): index oc * tp + t
    return flat @ fc_w.T + fc_b


def test_shapes_and_init():
    x = jnp.ones((5, 128, 3))
    model = SensorCNN()
    params = model.init(jax.random.PRNGKey(0), x)["params"]
    assert params["conv"]["kernel"].shape == (3, 3, 16)
    assert params["fc"]["kernel"].shape == (1008, 64)
    assert model.apply({"params": params}, x).shape == (5, 64)
    # official [N, 128, 1, 3] input is accepted and identical
    y4 = model.apply({"params": params}, x[:, :, None, :])
    np.testing.assert_array_equal(y4, model.apply({"params": params}, x))
    # PyTorch default init bounds 1/sqrt(fan_in)
    for leaf, fan_in in [(params["conv"]["kernel"], 9), (params["conv"]["bias"], 9),
                         (params["fc"]["kernel"], 1008), (params["fc"]["bias"], 1008)]:
        bound = 1 / np.sqrt(fan_in)
        assert np.abs(leaf).max() <= bound
        assert np.abs(leaf).max() > 0.8 * bound


def test_official_view_is_numpy_reshape():
    x = np.arange(2 * 128 * 3, dtype=np.float32).reshape(2, 128, 3)
    got = np.asarray(to_channels_first(jnp.asarray(x), "official_view"))
    np.testing.assert_array_equal(got, x.reshape(2, 3, 128))
    # channel c, time t = flat[c * 128 + t] of the row-major (128, 3) clip
    assert got[1, 2, 5] == x[1].reshape(-1)[2 * 128 + 5]
    # same from the official [N, 128, 1, 3] tensor
    got4 = np.asarray(to_channels_first(jnp.asarray(x[:, :, None, :]), "official_view"))
    np.testing.assert_array_equal(got4, x.reshape(2, 3, 128))
    np.testing.assert_array_equal(np.asarray(to_channels_first(jnp.asarray(x), "transpose")),
                                  x.transpose(0, 2, 1))
    with pytest.raises(ValueError):
        to_channels_first(jnp.asarray(x), "bogus")


def test_layouts_differ():
    x = jax.random.normal(jax.random.PRNGKey(1), (4, 128, 3))
    params = SensorCNN().init(jax.random.PRNGKey(0), x)["params"]
    a = SensorCNN(layout="transpose").apply({"params": params}, x)
    b = SensorCNN(layout="official_view").apply({"params": params}, x)
    assert np.abs(np.asarray(a) - np.asarray(b)).max() > 1e-3


@pytest.mark.parametrize("layout", ["transpose", "official_view"])
def test_matches_numpy_reference(layout):
    rng = np.random.default_rng(0)
    n, length, c, hidden, out = 2, 10, 3, 4, 5  # conv -> 8, pool -> 4, flatten 16
    x = rng.normal(size=(n, length, c)).astype(np.float32)
    conv_w = rng.normal(size=(hidden, c, 3)).astype(np.float32)  # torch [O, C, K]
    conv_b = rng.normal(size=(hidden,)).astype(np.float32)
    fc_w = rng.normal(size=(out, hidden * 4)).astype(np.float32)  # torch [out, in]
    fc_b = rng.normal(size=(out,)).astype(np.float32)
    params = {"conv": {"kernel": jnp.asarray(conv_w.transpose(2, 1, 0)), "bias": jnp.asarray(conv_b)},
              "fc": {"kernel": jnp.asarray(fc_w.T), "bias": jnp.asarray(fc_b)}}
    model = SensorCNN(hidden=hidden, out=out, layout=layout)
    ref_shapes = jax.tree_util.tree_map(jnp.shape, model.init(jax.random.PRNGKey(0), x)["params"])
    assert jax.tree_util.tree_map(jnp.shape, params) == ref_shapes
    got = np.asarray(model.apply({"params": params}, jnp.asarray(x)))
    x_cf = x.transpose(0, 2, 1) if layout == "transpose" else x.reshape(n, c, length)
    want = _numpy_forward(x_cf.astype(np.float64), conv_w, conv_b, fc_w, fc_b)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
