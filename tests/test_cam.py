"""CAM one-shot classifier (mumae_jax/models/cam.py): hand-computed values, numpy references, BN behaviour."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mumae_jax.models import cam

C, P, WAY = 192, 4, 5


def _feats(seed, n, c=C, p=P):
    return np.asarray(jax.random.normal(jax.random.PRNGKey(seed), (n, c, p)), np.float32)


# ---------------------------------------------------------------- numpy references

def _np_norm(x, axis):
    return x / np.maximum(np.sqrt((x * x).sum(axis, keepdims=True)), 1e-12)


def _np_softmax(x, axis):
    e = np.exp(x - x.max(axis, keepdims=True))
    return e / e.sum(axis, keepdims=True)


def _np_meta(m, params, stats, train):
    """m [B, H, W, P]; returns (g(m), batch mean, batch biased var or None)."""
    w1 = np.asarray(params["conv1"]["kernel"])[0, 0]
    w2 = np.asarray(params["conv2"]["kernel"])[0, 0]
    h = m @ w1
    mu = var = None
    if m.shape[-2] != 1:
        if train:
            mu, var = h.reshape(-1, h.shape[-1]).mean(0), h.reshape(-1, h.shape[-1]).var(0)
        else:
            mu, var = np.asarray(stats["mean"]), np.asarray(stats["var"])
        h = (h - mu) / np.sqrt(var + 1e-5) * np.asarray(params["bn"]["scale"]) + np.asarray(params["bn"]["bias"])
    return np.maximum(h, 0) @ w2, mu, var


def _np_attn(r, g):
    w = g(r.mean(-2))
    s = (r * w[..., None, :]).mean(-1)
    return _np_softmax(s / 0.025, -1) + 1.0


def _np_classifier(variables, support, labels, query, qlabels, tau=7.0, alpha=1.0):
    """Eval-mode reference of CAMClassifier (running BN stats)."""
    params = variables["params"]
    mp, st = params["cam"]["meta"], variables["batch_stats"]["cam"]["meta"]["bn"]
    g = lambda m: _np_meta(m, mp, st, False)[0]  # noqa: E731
    onehot = np.eye(WAY)[labels]
    p = np.einsum("sk,scp->kcp", onehot, support) / onehot.sum(0)[:, None, None]
    pn, qn = _np_norm(p, 1), _np_norm(query, 1)
    rp = np.einsum("kcp,kcq->kpq", pn, pn)
    p_s = p * _np_attn(rp[None, None], g)[0, 0][:, None, :]
    rq = np.einsum("ncp,ncq->npq", qn, qn)
    q_s = query * _np_attn(rq[:, None, None], g)[:, 0, 0][:, None, :]
    r = np.einsum("kcp,qcr->qkpr", pn, qn)
    a_p = _np_attn(r[:, None], g)[:, 0]
    a_q = _np_attn(np.swapaxes(r, -1, -2)[:, None], g)[:, 0]
    p_c = p[None] * a_p[:, :, None, :]
    q_c = query[:, None] * a_q[:, :, None, :]
    cos = lambda a, b, ax: (_np_norm(a, ax) * _np_norm(b, ax)).sum(ax)  # noqa: E731
    logits = (tau * cos(q_c.mean(-1), p_c.mean(-1), -1)
              + alpha * tau * cos(q_s.mean(-1)[:, None], p_s.mean(-1)[None], -1))
    cls = (tau * cos(q_c, p_c.mean(-1)[..., None], -2)
           + alpha * tau * cos(q_s[:, None], p_s.mean(-1)[None, :, :, None], -2))
    q_y = q_c[np.arange(len(qlabels)), qlabels]  # [Q, C, P]
    head = params["global_classifier"]
    glob = np.einsum("qcp,cn->qnp", q_y, np.asarray(head["kernel"])) + np.asarray(head["bias"])[None, :, None]
    return logits, cls, glob


# ---------------------------------------------------------------- helpers

def test_to_channel_positions_is_channel_major():
    x = np.arange(2 * 768, dtype=np.float32).reshape(2, 768)
    y = np.asarray(cam.to_channel_positions(jnp.asarray(x)))
    assert y.shape == (2, 192, 1, 2, 2)
    c, i, j = 17, 1, 0
    assert y[1, c, 0, i, j] == x[1, c * 4 + i * 2 + j]
    assert cam.to_channel_positions(jnp.zeros((3, 384)), channels=192).shape == (3, 192, 2)


def test_prototypes_are_class_means():
    s = _feats(0, 4, c=3, p=2)
    labels = np.array([1, 0, 1, 2])
    p = np.asarray(cam.prototypes(jnp.asarray(s), jnp.asarray(labels), 3))
    np.testing.assert_allclose(p[0], s[1], rtol=1e-6)
    np.testing.assert_allclose(p[1], (s[0] + s[2]) / 2, rtol=1e-6)
    np.testing.assert_allclose(p[2], s[3], rtol=1e-6)


# ---------------------------------------------------------------- attention map

def _identity_meta_params(p=2, hidden=6):
    w1 = np.zeros((1, 1, p, hidden), np.float32)
    w1[0, 0, :, :p] = np.eye(p)
    w2 = np.zeros((1, 1, hidden, p), np.float32)
    w2[0, 0, :p, :] = np.eye(p)
    return {"conv1": {"kernel": jnp.asarray(w1)}, "conv2": {"kernel": jnp.asarray(w2)}}


def test_attention_map_hand_case_p2():
    # R = [[1, 0], [0.5, 1]], g = ReLU (identity convs, BN skipped since W == 1):
    # m = [0.75, 0.5], w = m, s = [0.375, 0.4375], α = softmax(s / 0.025) + 1.
    r = jnp.asarray([[1.0, 0.0], [0.5, 1.0]]).reshape(1, 1, 1, 2, 2)
    meta = cam.MetaLearner()
    params = _identity_meta_params()
    g = lambda m: meta.apply({"params": params}, m, train=True)  # noqa: E731
    alpha = np.asarray(cam.attention_map(r, g)).reshape(2)
    a0 = 1.0 / (1.0 + math.exp(2.5))
    np.testing.assert_allclose(alpha, [1.0 + a0, 2.0 - a0], rtol=1e-6)
    # Temperature and offset are configurable.
    alpha = np.asarray(cam.attention_map(r, g, temperature=0.0625, offset=0.0)).reshape(2)
    np.testing.assert_allclose(alpha, [1 / (1 + math.e), 1 - 1 / (1 + math.e)], rtol=1e-6)


def test_attention_map_with_batchnorm_matches_numpy():
    r = np.asarray(jax.random.uniform(jax.random.PRNGKey(3), (2, 1, 3, P, P), minval=-1, maxval=1))
    meta = cam.MetaLearner()
    v = meta.init(jax.random.PRNGKey(0), jnp.zeros((1, 1, 3, P)))
    params = jax.tree_util.tree_map(np.asarray, v["params"])
    g = lambda m: meta.apply(v, m, train=True, mutable=["batch_stats"])[0]  # noqa: E731
    got = np.asarray(cam.attention_map(jnp.asarray(r), g))
    want = _np_attn(r, lambda m: _np_meta(m, params, None, True)[0])
    assert got.shape == (2, 1, 3, P)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- BatchNorm

def test_bn_skipped_exactly_when_last_spatial_axis_is_one():
    meta = cam.MetaLearner()
    v = meta.init(jax.random.PRNGKey(0), jnp.zeros((1, 1, 2, P)))
    assert "bn" in v["params"]
    params = jax.tree_util.tree_map(np.asarray, v["params"])
    for shape in [(1, 1, 1, P), (3, 4, 1, P)]:  # many elements, but W == 1 -> no BN
        m = np.asarray(jax.random.normal(jax.random.PRNGKey(1), shape))
        out, upd = meta.apply(v, jnp.asarray(m), train=True, mutable=["batch_stats"])
        np.testing.assert_allclose(out, np.maximum(m @ params["conv1"]["kernel"][0, 0], 0)
                                   @ params["conv2"]["kernel"][0, 0], rtol=1e-5, atol=1e-6)
        jax.tree_util.tree_map(np.testing.assert_array_equal, upd["batch_stats"], v["batch_stats"])
    for shape in [(1, 1, 2, P), (1, 3, 2, P)]:  # W > 1 -> BN with batch stats
        m = np.asarray(jax.random.normal(jax.random.PRNGKey(2), shape))
        out, upd = meta.apply(v, jnp.asarray(m), train=True, mutable=["batch_stats"])
        np.testing.assert_allclose(out, _np_meta(m, params, None, True)[0], rtol=1e-4, atol=1e-5)
        assert not np.allclose(upd["batch_stats"]["bn"]["mean"], 0.0)


def test_bn_train_updates_running_stats_eval_uses_them():
    meta = cam.MetaLearner()
    v = meta.init(jax.random.PRNGKey(0), jnp.zeros((1, 1, 5, P)))
    params = jax.tree_util.tree_map(np.asarray, v["params"])
    m = np.asarray(jax.random.normal(jax.random.PRNGKey(4), (1, 1, 5, P)))
    _, upd = meta.apply(v, jnp.asarray(m), train=True, mutable=["batch_stats"])
    _, mu, var = _np_meta(m, params, None, True)
    bs = upd["batch_stats"]["bn"]
    np.testing.assert_allclose(bs["mean"], 0.1 * mu, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(bs["var"], 0.9 + 0.1 * var * 5 / 4, rtol=1e-5)  # unbiased, like PyTorch
    # Eval: no mutation needed, output uses the running stats, independent of the batch.
    v2 = {"params": v["params"], "batch_stats": upd["batch_stats"]}
    out = meta.apply(v2, jnp.asarray(m), train=False)
    np.testing.assert_allclose(out, _np_meta(m, params, bs, False)[0], rtol=1e-4, atol=1e-5)
    one = meta.apply(v2, jnp.asarray(m[:, :, :2]), train=False)
    np.testing.assert_allclose(one, np.asarray(out)[:, :, :2], rtol=1e-5, atol=1e-6)
    # Eval with a mutable collection leaves the stats untouched.
    _, upd2 = meta.apply(v2, jnp.asarray(m), train=False, mutable=["batch_stats"])
    jax.tree_util.tree_map(np.testing.assert_array_equal, upd2["batch_stats"], upd["batch_stats"])


# ---------------------------------------------------------------- classifier

def _init_classifier(n_query=1, seed=0):
    model = cam.CAMClassifier()
    s = _feats(10 + seed, WAY)
    q = _feats(20 + seed, n_query)
    labels = np.arange(WAY)
    v = model.init(jax.random.PRNGKey(seed), jnp.asarray(s), jnp.asarray(labels), jnp.asarray(q))
    return model, v, s, labels, q


@pytest.mark.parametrize("n_query", [1, 5])
def test_shapes_and_param_tree(n_query):
    model, v, s, labels, q = _init_classifier(n_query)
    qlab = np.arange(n_query) % WAY
    out, upd = model.apply(v, jnp.asarray(s), jnp.asarray(labels), jnp.asarray(q), jnp.asarray(qlab),
                           train=True, mutable=["batch_stats"])
    assert out["logits"].shape == (n_query, WAY)
    assert out["cls_scores"].shape == (n_query, WAY, P)
    assert out["global_logits"].shape == (n_query, 33, P)
    assert v["params"]["cam"]["meta"]["conv1"]["kernel"].shape == (1, 1, P, 6)
    assert v["params"]["cam"]["meta"]["conv2"]["kernel"].shape == (1, 1, 6, P)
    assert v["params"]["global_classifier"]["kernel"].shape == (C, 33)
    assert set(upd["batch_stats"]["cam"]["meta"]["bn"]) == {"mean", "var", "count"}
    # [N, 768] -> [N, 192, 1, 2, 2] inputs give the same result as [N, 192, 4].
    s5 = cam.to_channel_positions(jnp.asarray(s.reshape(WAY, -1)))
    q5 = cam.to_channel_positions(jnp.asarray(q.reshape(n_query, -1)))
    out5 = model.apply(v, s5, jnp.asarray(labels), q5, jnp.asarray(qlab))
    out3 = model.apply(v, jnp.asarray(s), jnp.asarray(labels), jnp.asarray(q), jnp.asarray(qlab))
    for k in out3:
        np.testing.assert_allclose(out5[k], out3[k], rtol=1e-6)
    # Without query labels: no global logits (eval / prediction).
    assert set(model.apply(v, s5, jnp.asarray(labels), q5)) == {"logits", "cls_scores"}


@pytest.mark.parametrize("n_query", [1, 3])
def test_classifier_matches_numpy_reference(n_query):
    model, v, s, labels, q = _init_classifier(n_query, seed=1)
    # Non-trivial running stats and BN affine params.
    rng = np.random.default_rng(0)
    v = jax.tree_util.tree_map(lambda x: x, v)
    v["batch_stats"]["cam"]["meta"]["bn"] = {"mean": jnp.asarray(rng.normal(size=6) * 0.1, jnp.float32),
                                             "var": jnp.asarray(rng.uniform(0.5, 2, size=6), jnp.float32),
                                             "count": jnp.asarray(0, jnp.int32)}
    v["params"]["cam"]["meta"]["bn"] = {"scale": jnp.asarray(rng.uniform(0.5, 1.5, size=6), jnp.float32),
                                        "bias": jnp.asarray(rng.normal(size=6) * 0.1, jnp.float32)}
    perm = np.array([3, 0, 4, 1, 2])
    qlab = np.arange(n_query) % WAY
    out = model.apply(v, jnp.asarray(s[perm]), jnp.asarray(labels[perm]), jnp.asarray(q), jnp.asarray(qlab))
    want = _np_classifier(jax.tree_util.tree_map(np.asarray, v), s[perm], labels[perm], q, qlab)
    for k, w in zip(["logits", "cls_scores", "global_logits"], want):
        np.testing.assert_allclose(out[k], w, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("train", [False, True])
def test_permuting_classes_permutes_logits(train):
    model, v, s, labels, q = _init_classifier(2, seed=2)
    qlab = np.array([2, 4])
    pi = np.array([2, 0, 3, 4, 1])  # class k -> pi[k]
    order = np.array([4, 2, 0, 1, 3])  # also shuffle the support order

    def run(sup, lab, ql):
        out = model.apply(v, jnp.asarray(sup), jnp.asarray(lab), jnp.asarray(q), jnp.asarray(ql),
                          train=train, mutable=["batch_stats"])[0]
        return jax.tree_util.tree_map(np.asarray, out)

    a = run(s, labels, qlab)
    b = run(s[order], pi[labels][order], pi[qlab])
    np.testing.assert_allclose(b["logits"][:, pi], a["logits"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(b["cls_scores"][:, pi], a["cls_scores"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(b["global_logits"], a["global_logits"], rtol=1e-4, atol=1e-5)


def test_identical_query_is_predicted():
    model, v, s, labels, _ = _init_classifier(1, seed=3)
    q = s[[3, 1]] + 0.01 * _feats(99, 2)
    out = model.apply(v, jnp.asarray(s), jnp.asarray(labels), jnp.asarray(q))
    np.testing.assert_array_equal(np.argmax(out["logits"], -1), [3, 1])
    assert np.all(np.asarray(out["logits"]) <= 2 * 7.0 + 1e-4)


# ---------------------------------------------------------------- loss

def test_cam_loss_hand_case():
    glob = np.zeros((1, 3, 2), np.float32)
    glob[0, :, 0] = [math.log(2.0), 0.0, 0.0]   # p(0) = 1/2
    glob[0, :, 1] = [0.0, 0.0, 0.0]             # p(0) = 1/3
    cls = np.zeros((1, 2, 2), np.float32)
    cls[0, :, 0] = [0.0, math.log(3.0)]         # p(1) = 3/4
    cls[0, :, 1] = [0.0, 0.0]                   # p(1) = 1/2
    want = (math.log(2) + math.log(3)) / 2 + 0.5 * (-math.log(0.75) + math.log(2)) / 2
    got = cam.cam_loss(jnp.asarray(glob), jnp.array([0]), jnp.asarray(cls), jnp.array([1]))
    np.testing.assert_allclose(got, want, rtol=1e-6)
    # Two queries: the mean over queries.
    got2 = cam.cam_loss(jnp.asarray(np.concatenate([glob, glob])), jnp.array([0, 0]),
                        jnp.asarray(np.concatenate([cls, cls])), jnp.array([1, 1]))
    np.testing.assert_allclose(got2, want, rtol=1e-6)


def test_loss_gradients_are_finite_and_reach_every_param():
    model, v, s, labels, q = _init_classifier(1, seed=4)

    def loss_fn(params):
        out, _ = model.apply({"params": params, "batch_stats": v["batch_stats"]}, jnp.asarray(s),
                             jnp.asarray(labels), jnp.asarray(q), jnp.array([2]), train=True,
                             mutable=["batch_stats"])
        return cam.cam_loss(out["global_logits"], jnp.array([7]), out["cls_scores"], jnp.array([2]))

    grads = jax.grad(loss_fn)(v["params"])
    for path, g in jax.tree_util.tree_leaves_with_path(grads):
        assert np.all(np.isfinite(g)), path
        assert np.any(np.asarray(g) != 0), path
