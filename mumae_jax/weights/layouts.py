"""Leaf layouts (ours <-> PyTorch) and the strict engine shared by every state-dict format.

A format is described by `key_of(path) -> (torch key, leaf kind)`, one entry per parameter of ours.
Leaf kinds (ours -> torch):
  linear   Dense kernel [in, out]            -> weight (out, in)
  conv3d   Conv kernel [t, h, w, c, out]     -> Conv3d weight (out, c, t, h, w)
  conv1d   Dense kernel [in, out]            -> Conv1d (kernel 1) weight (out, in, 1)
  same     biases, LayerNorm scale/bias, q_bias/v_bias, mask_token: unchanged
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping

import numpy as np
from flax import traverse_util

KeyOf = Callable[[tuple[str, ...]], tuple[str, str]]


def _linear_to(x):
    return np.ascontiguousarray(x.T)


def _conv3d_to(x):
    return np.ascontiguousarray(np.transpose(x, (4, 3, 0, 1, 2)))


def _conv3d_from(x):
    return np.ascontiguousarray(np.transpose(x, (2, 3, 4, 1, 0)))


def _conv1d_to(x):
    return np.ascontiguousarray(x.T[:, :, None])


def _conv1d_from(x):
    return np.ascontiguousarray(x[:, :, 0].T)


def _same(x):
    return x


# kind -> (ours -> torch, torch -> ours)
CONVERT = {
    "linear": (_linear_to, _linear_to),
    "conv3d": (_conv3d_to, _conv3d_from),
    "conv1d": (_conv1d_to, _conv1d_from),
    "same": (_same, _same),
}


def torch_shape(kind: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The torch shape of a leaf of ours with `shape`."""
    return CONVERT[kind][0](np.empty(shape, np.float32)).shape


def unwrap_params(params):
    """(params without a {'params': ...} wrapper, whether it had one)."""
    if isinstance(params, Mapping) and set(params) == {"params"}:
        return params["params"], True
    return params, False


def export(params: Mapping[str, Any], key_of: KeyOf) -> dict[str, np.ndarray]:
    """Our params -> torch-layout state dict (float32 numpy), in our traversal order."""
    params, _ = unwrap_params(params)
    out = {}
    for path, leaf in traverse_util.flatten_dict(dict(params)).items():
        key, kind = key_of(path)
        if key in out:
            raise ValueError(f"two parameters map to the key {key!r}")
        out[key] = CONVERT[kind][0](np.asarray(leaf, np.float32))
    return out


def strict_import(state_dict: Mapping[str, Any], params_template: Mapping[str, Any], key_of: KeyOf,
                  skip: Iterable[str] = (), source: str = "state dict"):
    """Torch-layout state dict -> (params shaped like the template, report).

    report = {'missing': [keys the template needs but the state dict lacks], 'unexpected': [state-dict
    keys not used], 'mismatched': [(key, state-dict shape, expected shape)], 'skipped': [...],
    'loaded': n}. Any non-empty list raises ValueError naming every offending key, unless the key is
    in `skip`; skipped parameters keep the template's value. Leaves come back as numpy arrays in the
    template's dtypes (and wrapped in {'params': ...} if the template was).
    """
    skip = set(skip)
    template, wrapped = unwrap_params(params_template)
    missing, mismatched, new, used = [], [], {}, set()
    for path, leaf in traverse_util.flatten_dict(dict(template)).items():
        key, kind = key_of(path)
        tmpl = np.asarray(leaf)
        want = torch_shape(kind, tmpl.shape)
        if key not in state_dict:
            missing.append(key)
            new[path] = tmpl
            continue
        used.add(key)
        value = np.asarray(state_dict[key])
        if tuple(value.shape) != want:
            mismatched.append((key, tuple(value.shape), want))
            new[path] = tmpl
            continue
        new[path] = CONVERT[kind][1](value).astype(tmpl.dtype)
    unexpected = sorted(k for k in state_dict if k not in used)
    report = {"missing": missing, "unexpected": unexpected, "mismatched": mismatched}
    bad = ([f"missing: {k}" for k in missing if k not in skip]
           + [f"unexpected: {k}" for k in unexpected if k not in skip]
           + [f"shape mismatch: {k} has {s}, the model needs {e}" for k, s, e in mismatched if k not in skip])
    if bad:
        raise ValueError(f"{source} does not match the model (name keys in `skip` / --skip to leave them "
                         "out on purpose):\n  " + "\n  ".join(bad))
    report["skipped"] = sorted({k for k in missing + unexpected + [m[0] for m in mismatched]})
    report["loaded"] = len(used) - len([m for m in mismatched])
    params = traverse_util.unflatten_dict(new)
    return ({"params": params} if wrapped else params), report


def format_report(report: Mapping[str, Any]) -> str:
    """A human-readable strict report (what the convert command prints)."""
    lines = [f"loaded {report.get('loaded', '?')} tensors"]
    for name in ("missing", "unexpected", "mismatched", "skipped", "rebuilt"):
        items = report.get(name) or []
        lines.append(f"{name}: {len(items)}" + "".join(f"\n  {i}" for i in items))
    return "\n".join(lines)
