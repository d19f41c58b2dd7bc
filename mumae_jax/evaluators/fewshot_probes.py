"""Few-shot probes on frozen features: nearest prototype, cosine kNN, ridge regression, linear probe.

Every probe takes a fixed batch of E N-way K-shot episodes of pre-extracted features

    support [E, S, D] float, support_labels [E, S] int in 0..way-1, query [E, Q, D] float, way: int

and returns predictions [E, Q] int32. All episodes are processed at once (batched linear algebra /
`jax.vmap`, inside `jax.jit`); there is no Python loop over episodes. Inputs are validated on the host
first (shapes, finiteness, label range, every class 0..way-1 present in every episode's support) and
problems raise a ValueError that names them.

Feature preprocessing, shared by all probes (`normalize=`, applied per episode to support and query):
- 'l2' (default): each feature vector divided by its L2 norm (max(norm, 1e-12)).
- 'center_l2': subtract the episode's *support* mean (over all S support vectors, not per class) from
  support and query, then L2 -- the usual few-shot "centering" trick that removes the direction shared
  by all features of the episode.
- 'none': features as given.

Probes:
- `nearest_prototype`: class means of the (preprocessed) support, cosine similarity, argmax.
- `knn`: cosine similarity to the S support vectors; majority vote among the k most similar; a tie in
  the vote count is broken by the larger summed similarity of the tied classes' neighbours (then by the
  lower class index). Equal similarities when choosing the k neighbours go to the lower support index.
- `ridge`: closed-form ridge regression onto one-hot targets with an unpenalised bias, fitted by
  centring: with Xc = X - mean(X), Yc = Y - mean(Y) (means over the S support rows),
  W = argmin |Xc W - Yc|^2 + lam |W|^2, scores = (q - mean(X)) W + mean(Y). Solved in the dual form
  W = Xc^T (Xc Xc^T + lam I)^-1 Yc (an S x S solve per episode, S << D). `ridge_scores` gives the scores.
- `linear_probe`: multinomial logistic regression (W [D, way], b [way]) per episode, from zero init,
  `steps` full-batch Adam steps on mean support cross-entropy + weight_decay/2 * |W|^2 (bias not
  penalised). Deterministic (no randomness). Cost is O(steps * E * S * D * way): ~3 s for E=1000,
  D=512 on 2 shared CPU cores (~30 s for E=10000); negligible on an accelerator.

Prototype and kNN always use cosine similarity, so for them 'none' and 'l2' differ only through the
prototype averaging (prototype) or not at all (kNN). Exact ties in argmax go to the lower class index.

`evaluate` runs several probes and scores them with `episodes.accuracy_with_ci` (mean % and 95% CI
half-width in percentage points over all E*Q queries); `format_table` renders the result.
"""
from __future__ import annotations

import functools
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mumae_jax.data.episodes import accuracy_with_ci

__all__ = [
    "NORMALIZE_MODES", "PROBES", "preprocess", "nearest_prototype", "knn", "ridge_scores", "ridge",
    "linear_probe", "evaluate", "evaluate_on_episodes", "format_table",
]

NORMALIZE_MODES = ("l2", "center_l2", "none")
_EPS = 1e-12
_HI = jax.lax.Precision.HIGHEST


# ----------------------------------------------------------------------------------------------------
# Validation (host side, numpy)
# ----------------------------------------------------------------------------------------------------

def _check_labels(labels: np.ndarray, name: str, way: int) -> None:
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{name} must be integers, got dtype {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() >= way):
        bad = labels[(labels < 0) | (labels >= way)]
        raise ValueError(f"{name} out of range 0..{way - 1} (way={way}): found {sorted(set(bad.tolist()))[:5]}")


def _validate(support, support_labels, query, way, query_labels=None):
    """Checks the episode batch; returns support, support_labels, query as jax arrays (features float32
    unless already a float dtype jax keeps), plus query_labels as numpy when given."""
    if isinstance(way, bool) or not isinstance(way, (int, np.integer)) or way < 1:
        raise ValueError(f"way must be a positive int, got {way!r}")
    way = int(way)
    s, q = np.asarray(support), np.asarray(query)
    sl = np.asarray(support_labels)
    if s.ndim != 3:
        raise ValueError(f"support must be [E, S, D], got shape {s.shape}")
    if q.ndim != 3:
        raise ValueError(f"query must be [E, Q, D], got shape {q.shape}")
    if sl.shape != s.shape[:2]:
        raise ValueError(f"support_labels shape {sl.shape} does not match support [E, S] = {s.shape[:2]}")
    if q.shape[0] != s.shape[0]:
        raise ValueError(f"query has {q.shape[0]} episodes but support has {s.shape[0]} (shapes {q.shape}, "
                         f"{s.shape})")
    if q.shape[2] != s.shape[2]:
        raise ValueError(f"feature dim mismatch: support D={s.shape[2]}, query D={q.shape[2]}")
    if min(s.shape) == 0 or q.shape[1] == 0:
        raise ValueError(f"empty input: support {s.shape}, query {q.shape}")
    for name, x in (("support", s), ("query", q)):
        if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
            raise ValueError(f"{name} must be real numbers, got dtype {x.dtype}")
        if not np.all(np.isfinite(x)):
            raise ValueError(f"{name} contains non-finite values (NaN/inf)")
    _check_labels(sl, "support_labels", way)
    counts = np.zeros((s.shape[0], way), np.int64)
    np.add.at(counts, (np.arange(s.shape[0])[:, None], sl), 1)
    missing = np.argwhere(counts == 0)
    if missing.size:
        e, c = missing[0]
        raise ValueError(f"class {c} has no support sample in episode {e} ({len(missing)} (episode, class) "
                         f"pairs without support; way={way})")
    dtype = jax.dtypes.canonicalize_dtype(s.dtype if np.issubdtype(s.dtype, np.floating) else np.float32)
    out = [jnp.asarray(s, dtype), jnp.asarray(sl, jnp.int32), jnp.asarray(q, dtype)]
    if query_labels is not None:
        ql = np.asarray(query_labels)
        if ql.shape != q.shape[:2]:
            raise ValueError(f"query_labels shape {ql.shape} does not match query [E, Q] = {q.shape[:2]}")
        _check_labels(ql, "query_labels", way)
        out.append(ql)
    return tuple(out)


def _check_normalize(normalize: str) -> None:
    if normalize not in NORMALIZE_MODES:
        raise ValueError(f"normalize must be one of {NORMALIZE_MODES}, got {normalize!r}")


# ----------------------------------------------------------------------------------------------------
# Jitted cores (batched over episodes)
# ----------------------------------------------------------------------------------------------------

def _l2(x: jax.Array) -> jax.Array:
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), _EPS)


def preprocess(support: jax.Array, query: jax.Array, normalize: str = "l2") -> tuple[jax.Array, jax.Array]:
    """[E, S, D], [E, Q, D] -> the same shapes, preprocessed per episode (see module docstring)."""
    _check_normalize(normalize)
    if normalize == "none":
        return support, query
    if normalize == "center_l2":
        mu = support.mean(axis=1, keepdims=True)  # [E, 1, D]
        support, query = support - mu, query - mu
    return _l2(support), _l2(query)


@functools.partial(jax.jit, static_argnames=("way", "normalize"))
def _prototype_core(support, support_labels, query, way, normalize):
    support, query = preprocess(support, query, normalize)
    onehot = jax.nn.one_hot(support_labels, way, dtype=support.dtype)  # [E, S, W]
    protos = jnp.einsum("esw,esd->ewd", onehot, support, precision=_HI) / onehot.sum(1)[..., None]
    sims = jnp.einsum("eqd,ewd->eqw", _l2(query), _l2(protos), precision=_HI)
    return jnp.argmax(sims, axis=-1).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("way", "normalize", "k"))
def _knn_core(support, support_labels, query, way, normalize, k):
    support, query = preprocess(support, query, normalize)
    sims = jnp.einsum("eqd,esd->eqs", _l2(query), _l2(support), precision=_HI)  # [E, Q, S]
    top_sims, top_idx = jax.lax.top_k(sims, k)  # [E, Q, k]
    top_labels = jnp.take_along_axis(support_labels[:, None, :], top_idx, axis=-1)  # [E, Q, k]
    onehot = jax.nn.one_hot(top_labels, way, dtype=sims.dtype)  # [E, Q, k, W]
    votes = onehot.sum(2)  # [E, Q, W]
    sim_sum = (onehot * top_sims[..., None]).sum(2)  # [E, Q, W]
    tied = votes == votes.max(-1, keepdims=True)
    return jnp.argmax(jnp.where(tied, sim_sum, -jnp.inf), axis=-1).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("way", "normalize"))
def _ridge_core(support, support_labels, query, lam, way, normalize):
    support, query = preprocess(support, query, normalize)
    y = jax.nn.one_hot(support_labels, way, dtype=support.dtype)  # [E, S, W]
    mx, my = support.mean(1, keepdims=True), y.mean(1, keepdims=True)
    xc, yc = support - mx, y - my
    gram = jnp.einsum("esd,etd->est", xc, xc, precision=_HI)  # [E, S, S]
    eye = jnp.eye(gram.shape[-1], dtype=gram.dtype)
    alpha = jnp.linalg.solve(gram + lam * eye, yc)  # [E, S, W]
    kq = jnp.einsum("eqd,esd->eqs", query - mx, xc, precision=_HI)  # [E, Q, S]
    return jnp.einsum("eqs,esw->eqw", kq, alpha, precision=_HI) + my


@functools.partial(jax.jit, static_argnames=("way", "normalize", "steps"))
def _linear_core(support, support_labels, query, lr, weight_decay, way, normalize, steps):
    support, query = preprocess(support, query, normalize)
    opt = optax.adam(lr)

    def fit_one(x, y, xq):  # x [S, D], y [S], xq [Q, D] -> [Q]
        params = {"w": jnp.zeros((x.shape[-1], way), x.dtype), "b": jnp.zeros((way,), x.dtype)}

        def loss_fn(p):
            logits = jnp.dot(x, p["w"], precision=_HI) + p["b"]
            ce = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
            return ce + 0.5 * weight_decay * jnp.sum(p["w"] ** 2)

        def step(_, carry):
            p, s = carry
            g = jax.grad(loss_fn)(p)
            upd, s = opt.update(g, s, p)
            return optax.apply_updates(p, upd), s

        params, _ = jax.lax.fori_loop(0, steps, step, (params, opt.init(params)))
        return jnp.argmax(jnp.dot(xq, params["w"], precision=_HI) + params["b"], axis=-1)

    return jax.vmap(fit_one)(support, support_labels, query).astype(jnp.int32)


# ----------------------------------------------------------------------------------------------------
# Public probes
# ----------------------------------------------------------------------------------------------------

def nearest_prototype(support, support_labels, query, way: int, normalize: str = "l2") -> jax.Array:
    """Cosine nearest class mean. support [E, S, D], support_labels [E, S], query [E, Q, D] -> [E, Q] int32."""
    _check_normalize(normalize)
    s, sl, q = _validate(support, support_labels, query, way)
    return _prototype_core(s, sl, q, way=int(way), normalize=normalize)


def knn(support, support_labels, query, way: int, k: int = 1, normalize: str = "l2") -> jax.Array:
    """Cosine k-nearest-neighbour vote over the support (vote ties -> larger summed similarity, then lower
    class). support [E, S, D], support_labels [E, S], query [E, Q, D] -> [E, Q] int32. Needs 1 <= k <= S."""
    _check_normalize(normalize)
    s, sl, q = _validate(support, support_labels, query, way)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= s.shape[1]:
        raise ValueError(f"knn needs an int k with 1 <= k <= S (number of support samples = {s.shape[1]}), "
                         f"got k={k!r}")
    return _knn_core(s, sl, q, way=int(way), normalize=normalize, k=int(k))


def ridge_scores(support, support_labels, query, way: int, lam: float = 1.0, normalize: str = "l2") -> jax.Array:
    """Ridge-regression class scores (centred, unpenalised bias; dual S x S solve).
    support [E, S, D], support_labels [E, S], query [E, Q, D] -> scores [E, Q, way]. Needs lam > 0."""
    _check_normalize(normalize)
    if not float(lam) > 0:
        raise ValueError(f"ridge needs lam > 0 (the centred S x S Gram matrix is singular), got lam={lam!r}")
    s, sl, q = _validate(support, support_labels, query, way)
    return _ridge_core(s, sl, q, jnp.asarray(lam, s.dtype), way=int(way), normalize=normalize)


def ridge(support, support_labels, query, way: int, lam: float = 1.0, normalize: str = "l2") -> jax.Array:
    """argmax of `ridge_scores`: [E, S, D], [E, S], [E, Q, D] -> [E, Q] int32."""
    return jnp.argmax(ridge_scores(support, support_labels, query, way, lam, normalize), -1).astype(jnp.int32)


def linear_probe(support, support_labels, query, way: int, steps: int = 100, lr: float = 0.1,
                 weight_decay: float = 1e-4, normalize: str = "l2") -> jax.Array:
    """Per-episode softmax regression, zero init, `steps` full-batch Adam(lr) steps on mean cross-entropy
    + weight_decay/2 * |W|^2. support [E, S, D], support_labels [E, S], query [E, Q, D] -> [E, Q] int32."""
    _check_normalize(normalize)
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 0:
        raise ValueError(f"linear_probe steps must be an int >= 0, got {steps!r}")
    if not float(lr) > 0 or not float(weight_decay) >= 0:
        raise ValueError(f"linear_probe needs lr > 0 and weight_decay >= 0, got lr={lr!r}, "
                         f"weight_decay={weight_decay!r}")
    s, sl, q = _validate(support, support_labels, query, way)
    return _linear_core(s, sl, q, jnp.asarray(lr, s.dtype), jnp.asarray(weight_decay, s.dtype), way=int(way),
                        normalize=normalize, steps=int(steps))


# ----------------------------------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------------------------------

PROBES = {"prototype": nearest_prototype, "knn": knn, "ridge": ridge, "linear": linear_probe}
_OPTIONS = {"prototype": {"normalize"}, "knn": {"normalize", "k"}, "ridge": {"normalize", "lam"},
            "linear": {"normalize", "steps", "lr", "weight_decay"}}


def evaluate(support, support_labels, query, query_labels, way: int,
             probes: Sequence[str] = ("prototype", "knn", "ridge", "linear"), **options: Any) -> dict[str, dict]:
    """Runs `probes` on one episode batch and scores them against query_labels [E, Q].

    `options` go to every selected probe that takes them (normalize -> all; k -> knn; lam -> ridge;
    steps, lr, weight_decay -> linear); an option no selected probe takes is a ValueError.
    Returns {name: {"accuracy": %, "ci95": pp, "num_queries": E*Q, "hits": bool np.ndarray [E, Q]}}
    in the order of `probes`; accuracy and ci95 from `episodes.accuracy_with_ci` over all queries.
    """
    if isinstance(probes, str):
        probes = (probes,)
    probes = tuple(probes)
    unknown = [p for p in probes if p not in PROBES]
    if unknown or not probes or len(set(probes)) != len(probes):
        raise ValueError(f"probes must be distinct names from {tuple(PROBES)}, got {probes}")
    used = set().union(*(_OPTIONS[p] for p in probes))
    extra = sorted(set(options) - used)
    if extra:
        raise ValueError(f"option(s) {extra} not used by any of the probes {probes} (they take {sorted(used)})")
    s, sl, q, ql = _validate(support, support_labels, query, way, query_labels)
    results = {}
    for name in probes:
        kw = {key: v for key, v in options.items() if key in _OPTIONS[name]}
        pred = np.asarray(PROBES[name](s, sl, q, way, **kw))
        hits = pred == ql
        acc, ci = accuracy_with_ci(hits.reshape(-1))
        results[name] = {"accuracy": acc, "ci95": ci, "num_queries": int(hits.size), "hits": hits}
    return results


def evaluate_on_episodes(features, clip_names: Sequence[str], episode_list: Sequence[Any],
                         probes: Sequence[str] = ("prototype", "ridge"), chunk: int = 0,
                         **options: Any) -> dict[str, dict]:
    """`evaluate` of per-clip features [len(clip_names), D] on a list of `episodes.Episode`s (same way,
    shot and query count), `chunk` episodes at a time (0: all at once; raw pixels need chunks to fit in
    memory). Returns {probe: {"accuracy": %, "ci95": pp, "num_queries": E·Q}} over all queries."""
    ways = {len(e.classes) for e in episode_list}
    if len(ways) != 1 or len({(len(e.support), len(e.query)) for e in episode_list}) != 1:
        raise ValueError("all episodes of a list must have the same way, shot and query count")
    pos = {n: i for i, n in enumerate(clip_names)}
    feats = np.asarray(features)
    step = chunk if chunk > 0 else max(len(episode_list), 1)
    hits: dict[str, list] = {p: [] for p in probes}
    for start in range(0, len(episode_list), step):
        part = episode_list[start:start + step]
        res = evaluate(feats[np.asarray([[pos[c] for c in e.support] for e in part])],
                       np.asarray([e.support_labels for e in part], np.int32),
                       feats[np.asarray([[pos[c] for c in e.query] for e in part])],
                       np.asarray([e.query_labels for e in part], np.int32), next(iter(ways)), probes=probes,
                       **options)
        for p in probes:
            hits[p].append(res[p]["hits"].reshape(-1))
    out = {}
    for p in probes:
        h = np.concatenate(hits[p])
        acc, ci = accuracy_with_ci(h)
        out[p] = {"accuracy": acc, "ci95": ci, "num_queries": int(h.size)}
    return out


def format_table(results: Mapping[str, Mapping[str, Any]]) -> str:
    """Text table of `evaluate` output: one row per probe, 'accuracy ± ci95' in %, number of queries."""
    rows = [("probe", "accuracy (%)", "queries")]
    rows += [(name, f"{r['accuracy']:.2f} ± {r['ci95']:.2f}", str(r["num_queries"])) for name, r in results.items()]
    w0, w1 = (max(len(r[i]) for r in rows) for i in (0, 1))
    lines = [f"{a:<{w0}}  {b:>{w1}}  {c:>7}" for a, b, c in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)
