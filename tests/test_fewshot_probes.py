"""Few-shot probes on frozen features (mumae_jax/evaluators/fewshot_probes.py): hand-worked cases, a NumPy primal
ridge reference, linear-probe separability and label equivariance, vmap == per-episode loop, evaluate()."""
import math

import numpy as np
import pytest

from mumae_jax.evaluators import fewshot_probes as fp

PROBE_FNS = {"prototype": fp.nearest_prototype, "knn": fp.knn, "ridge": fp.ridge, "linear": fp.linear_probe}


def _unit(cos):
    """2-D unit vector with the given cosine to (1, 0) (positive sine)."""
    return [cos, math.sqrt(1.0 - cos * cos)]


def _clusters(rng, e, way, shot, q_per_class, d, noise):
    """Per-episode Gaussian class clusters: means N(0, I), samples mean + noise * N(0, I)."""
    means = rng.normal(size=(e, way, d))
    sl = np.tile(np.repeat(np.arange(way), shot), (e, 1))
    ql = np.tile(np.repeat(np.arange(way), q_per_class), (e, 1))
    take = lambda lab: np.take_along_axis(means, lab[..., None], axis=1)  # noqa: E731
    s = take(sl) + noise * rng.normal(size=sl.shape + (d,))
    q = take(ql) + noise * rng.normal(size=ql.shape + (d,))
    return s.astype(np.float32), sl, q.astype(np.float32), ql


# ----------------------------------------------------------------------------------------------------
# Hand cases
# ----------------------------------------------------------------------------------------------------

def test_prototype_is_cosine_not_euclidean():
    # Episode 0, 3-way 2-shot, D=2. Prototypes: c0 (1,0), c1 (-1,.5), c2 (5,5) [(.5,.5) after l2].
    # Query a=(1,.9): Euclidean-nearest prototype is c0 (dist .9), but its angle (42 deg) is closest to
    # c2's (45 deg): cos .999 vs .743 -> 2. Query b=(-2,.5): cos to c1 .98 -> 1.
    # Episode 1: the same features with labels relabelled 0->2, 1->0, 2->1 -> predictions [1, 0].
    s0 = [[1, 0], [1, 0], [-1, .5], [-1, .5], [10, 0], [0, 10]]
    q0 = [[1, .9], [-2, .5]]
    support = np.array([s0, s0], np.float32)
    labels = np.array([[0, 0, 1, 1, 2, 2], [2, 2, 0, 0, 1, 1]])
    query = np.array([q0, q0], np.float32)
    protos = np.array([[1, 0], [-1, .5], [5, 5]])
    assert np.argmin(np.linalg.norm(protos - np.array([1, .9]), axis=1)) == 0  # the construction
    for norm in ("none", "l2"):
        pred = fp.nearest_prototype(support, labels, query, 3, normalize=norm)
        assert pred.dtype == np.int32 and pred.shape == (2, 2)
        np.testing.assert_array_equal(pred, [[2, 1], [1, 0]])


def test_center_l2_changes_the_answer():
    # 2-way 1-shot, D=2: c0 (10,1), c1 (12,-1), query (10.5,-.4).
    # l2: angles c0 +5.7, c1 -4.8, query -2.2 deg -> 1.
    # center_l2: support mean (11,0); c0 -> (-1,1), c1 -> (1,-1), query -> (-.5,-.4);
    # cos(q, c0) = .1/(.64*1.41) > 0 > cos(q, c1) -> 0.
    support = np.array([[[10, 1], [12, -1]]], np.float32)
    labels = np.array([[0, 1]])
    query = np.array([[[10.5, -.4]]], np.float32)
    for fn in (fp.nearest_prototype, fp.knn):
        assert int(fn(support, labels, query, 2, normalize="l2")[0, 0]) == 1
        assert int(fn(support, labels, query, 2, normalize="center_l2")[0, 0]) == 0


def test_knn_k_and_tie_break():
    # Query (1,0); support vectors are unit vectors whose cosine to the query is given; labels interleaved.
    #   e0: c0 {.95, -.5}, c1 {.8, .7}:  k=1 -> 0 (nearest); k=3 -> {c0, c1, c1} -> 1;
    #       k=4: 2-2 vote, sums -.45+.95=.45 < 1.5 -> 1.
    #   e1: c0 {.9, .1}, c1 {.6, .6}:    k=1 -> 0; k=2: 1-1 vote, .9 > .6 -> 0; k=3 -> 1;
    #       k=4: 2-2 vote, sums 1.0 < 1.2 -> 1 (the tie does NOT go to the nearest neighbour's class).
    #   e2: c0 {.9, .1}, c1 {.45, .45}:  k=4: 2-2 vote, sums 1.0 > .9 -> 0; k=3 -> {c0, c1, c1} -> 1.
    cos = [[.95, .8, -.5, .7], [.9, .6, .1, .6], [.9, .45, .1, .45]]
    labels = np.array([[0, 1, 0, 1]] * 3)
    support = np.array([[_unit(c) for c in row] for row in cos], np.float32)
    query = np.array([[[1.0, 0.0]]] * 3, np.float32)
    expected = {1: [0, 0, 0], 2: [0, 0, 0], 3: [1, 1, 1], 4: [1, 1, 0]}
    for k, want in expected.items():
        pred = fp.knn(support, labels, query, 2, k=k)
        assert pred.shape == (3, 1)
        np.testing.assert_array_equal(pred[:, 0], want, err_msg=f"k={k}")
    with pytest.raises(ValueError, match=r"1 <= k <= S .*= 4\), got k=5"):
        fp.knn(support, labels, query, 2, k=5)


# ----------------------------------------------------------------------------------------------------
# Ridge vs a NumPy primal solution
# ----------------------------------------------------------------------------------------------------

def _np_preprocess(x, mu, mode):
    if mode == "none":
        return x
    if mode == "center_l2":
        x = x - mu
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


@pytest.mark.parametrize("normalize", fp.NORMALIZE_MODES)
def test_ridge_equals_numpy_primal(normalize):
    rng = np.random.default_rng(1)
    e, way, shot, d, q, lam = 3, 3, 2, 10, 4, 0.5
    support = rng.normal(size=(e, way * shot, d)).astype(np.float32)
    labels = np.stack([rng.permutation(np.repeat(np.arange(way), shot)) for _ in range(e)])
    query = rng.normal(size=(e, q, d)).astype(np.float32)
    got = np.asarray(fp.ridge_scores(support, labels, query, way, lam=lam, normalize=normalize))
    assert got.shape == (e, q, way)
    for i in range(e):
        x64, q64 = support[i].astype(np.float64), query[i].astype(np.float64)
        mu = x64.mean(0)
        x, xq = _np_preprocess(x64, mu, normalize), _np_preprocess(q64, mu, normalize)
        y = np.eye(way)[labels[i]]
        mx, my = x.mean(0), y.mean(0)
        xc, yc = x - mx, y - my
        w = np.linalg.solve(xc.T @ xc + lam * np.eye(d), xc.T @ yc)  # primal [D, way]
        want = (xq - mx) @ w + my
        np.testing.assert_allclose(got[i], want, atol=1e-4, rtol=0)
    np.testing.assert_array_equal(fp.ridge(support, labels, query, way, lam=lam, normalize=normalize),
                                  got.argmax(-1))


# ----------------------------------------------------------------------------------------------------
# Linear probe
# ----------------------------------------------------------------------------------------------------

def test_linear_probe_separable_and_label_equivariant():
    rng = np.random.default_rng(2)
    s, sl, q, ql = _clusters(rng, e=4, way=3, shot=2, q_per_class=3, d=8, noise=0.1)
    pred = fp.linear_probe(s, sl, q, 3)
    assert pred.dtype == np.int32 and pred.shape == (4, 9)
    np.testing.assert_array_equal(pred, ql)  # 100%

    # Label permutation: relabel support y -> perm_e[y]; predictions must become perm_e[pred].
    # Noisier clusters so that some predictions are wrong (the check is not just "all correct").
    s, sl, q, ql = _clusters(rng, e=4, way=3, shot=2, q_per_class=3, d=8, noise=1.2)
    perm = np.stack([rng.permutation(3) for _ in range(4)])
    perm[0] = [1, 2, 0]  # at least one non-identity permutation
    base = np.asarray(fp.linear_probe(s, sl, q, 3))
    assert 0 < (base == ql).mean() < 1
    permuted = np.asarray(fp.linear_probe(s, np.take_along_axis(perm, sl, 1), q, 3))
    np.testing.assert_array_equal(permuted, np.take_along_axis(perm, base, 1))
    assert not np.array_equal(permuted, base)


# ----------------------------------------------------------------------------------------------------
# Batched == per-episode loop
# ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,kw", [("prototype", {}), ("knn", {"k": 3}), ("ridge", {"lam": 0.3}),
                                     ("linear", {"steps": 30, "normalize": "center_l2"})])
def test_batched_equals_loop(name, kw):
    rng = np.random.default_rng(3)
    s, sl, q, _ = _clusters(rng, e=5, way=3, shot=2, q_per_class=2, d=6, noise=1.0)
    sl = np.stack([rng.permutation(r) for r in sl])  # shuffled support order per episode
    fn = PROBE_FNS[name]
    batched = np.asarray(fn(s, sl, q, 3, **kw))
    loop = np.concatenate([np.asarray(fn(s[i:i + 1], sl[i:i + 1], q[i:i + 1], 3, **kw)) for i in range(5)])
    assert batched.shape == (5, 6)
    np.testing.assert_array_equal(batched, loop)


# ----------------------------------------------------------------------------------------------------
# evaluate() / format_table()
# ----------------------------------------------------------------------------------------------------

def test_evaluate_matches_hand_computation_and_is_deterministic():
    rng = np.random.default_rng(4)
    s, sl, q, ql = _clusters(rng, e=20, way=3, shot=1, q_per_class=2, d=6, noise=1.5)
    opts = dict(k=1, lam=2.0, steps=40, normalize="center_l2")
    r1 = fp.evaluate(s, sl, q, ql, 3, **opts)
    r2 = fp.evaluate(s, sl, q, ql, 3, **opts)
    assert list(r1) == ["prototype", "knn", "ridge", "linear"]
    for name, r in r1.items():
        own = {"prototype": (), "knn": ("k",), "ridge": ("lam",), "linear": ("steps",)}[name]
        kw = {key: opts[key] for key in ("normalize",) + own}
        hits = np.asarray(PROBE_FNS[name](s, sl, q, 3, **kw)) == ql
        np.testing.assert_array_equal(r["hits"], hits)
        assert r["hits"].dtype == bool and r["hits"].shape == (20, 6) and r["num_queries"] == 120
        h = hits.reshape(-1).astype(np.float64)
        assert r["accuracy"] == pytest.approx(100.0 * h.sum() / h.size, abs=1e-9)
        sd = math.sqrt(((h - h.mean()) ** 2).mean())
        assert r["ci95"] == pytest.approx(1.96 * 100.0 * sd / math.sqrt(h.size), abs=1e-9)
        assert 0 < r["accuracy"] < 100 and r["ci95"] > 0  # non-degenerate
        assert r2[name]["accuracy"] == r["accuracy"] and r2[name]["ci95"] == r["ci95"]
        np.testing.assert_array_equal(r2[name]["hits"], r["hits"])
    table = fp.format_table(r1)
    lines = table.splitlines()
    assert len(lines) == 2 + 4 and lines[0].split()[0] == "probe"
    a = r1["ridge"]
    assert f"{a['accuracy']:.2f} ± {a['ci95']:.2f}" in next(x for x in lines if x.startswith("ridge"))
    assert lines[-1].split()[-1] == "120"


def test_evaluate_5way_1shot_1000_episodes():
    rng = np.random.default_rng(5)
    s, sl, q, ql = _clusters(rng, e=1000, way=5, shot=1, q_per_class=1, d=64, noise=0.7)
    assert s.shape == (1000, 5, 64) and q.shape == (1000, 5, 64)
    res = fp.evaluate(s, sl, q, ql, 5)
    for name, r in res.items():
        assert r["hits"].shape == (1000, 5) and r["num_queries"] == 5000
        assert r["accuracy"] > 90.0, (name, r["accuracy"])
    random_ql = rng.integers(0, 5, size=ql.shape)
    res = fp.evaluate(s, sl, q, random_ql, 5, probes=("prototype", "ridge", "linear"))
    for name, r in res.items():
        assert abs(r["accuracy"] - 20.0) < 10.0, (name, r["accuracy"])


# ----------------------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------------------

def _good():
    s = np.zeros((2, 4, 3), np.float32) + np.arange(3)
    return s, np.array([[0, 1, 2, 0], [2, 1, 0, 1]]), np.ones((2, 2, 3), np.float32)


@pytest.mark.parametrize("change,match", [
    (lambda s, l, q: (s[0], l, q), r"support must be \[E, S, D\]"),
    (lambda s, l, q: (s, l[:, :3], q), r"support_labels shape \(2, 3\) does not match"),
    (lambda s, l, q: (s, l, q[:1]), r"query has 1 episodes but support has 2"),
    (lambda s, l, q: (s, l, q[..., :2]), r"feature dim mismatch: support D=3, query D=2"),
    (lambda s, l, q: (s, np.where(l == 2, 3, l), q), r"support_labels out of range 0..2 .*\[3\]"),
    (lambda s, l, q: (s, np.where(l == 2, -1, l), q), r"support_labels out of range 0..2 .*\[-1\]"),
    (lambda s, l, q: (s, l.astype(np.float32), q), r"support_labels must be integers"),
    (lambda s, l, q: (s, np.array([[0, 1, 2, 0], [0, 1, 0, 1]]), q), r"class 2 has no support sample in episode 1"),
    (lambda s, l, q: (s, l, np.full_like(q, np.nan)), r"query contains non-finite"),
])
def test_bad_input(change, match):
    s, l, q = change(*_good())
    for fn in PROBE_FNS.values():
        with pytest.raises(ValueError, match=match):
            fn(s, l, q, 3)


def test_bad_options():
    s, l, q = _good()
    ql = np.zeros((2, 2), int)
    with pytest.raises(ValueError, match=r"normalize must be one of"):
        fp.nearest_prototype(s, l, q, 3, normalize="L2")
    with pytest.raises(ValueError, match=r"lam > 0"):
        fp.ridge(s, l, q, 3, lam=0.0)
    with pytest.raises(ValueError, match=r"way must be a positive int"):
        fp.knn(s, l, q, 0)
    with pytest.raises(ValueError, match=r"probes must be distinct names"):
        fp.evaluate(s, l, q, ql, 3, probes=("prototype", "svm"))
    with pytest.raises(ValueError, match=r"option\(s\) \['k'\] not used by any of the probes \('ridge',\)"):
        fp.evaluate(s, l, q, ql, 3, probes=("ridge",), k=3)
    with pytest.raises(ValueError, match=r"query_labels shape \(2, 1\) does not match"):
        fp.evaluate(s, l, q, ql[:, :1], 3)
    with pytest.raises(ValueError, match=r"query_labels out of range"):
        fp.evaluate(s, l, q, ql + 3, 3)
