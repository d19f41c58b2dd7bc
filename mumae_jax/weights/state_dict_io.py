"""Reading and writing PyTorch-layout state dicts without trusting the file.

Accepted sources:
  *.pth / *.pt / *.bin  PyTorch pickles, read ONLY with `torch.load(weights_only=True)` (needs torch; a
                        file holding anything but tensors and plain containers is refused).
  *.safetensors         read with `safetensors.numpy` (no torch needed).
  *.npz                 read with `np.load(allow_pickle=False)` (no torch needed).
  a directory           a Hugging Face `save_pretrained` folder: config.json + model.safetensors (or a
                        sharded model.safetensors.index.json, or pytorch_model.bin).
Training checkpoints `{'model': sd, 'epoch': ...}` (official Mu-MAE / VideoMAE; also 'module' and
'state_dict') are unwrapped. Every problem is a ValueError naming the file: truncated or foreign files,
non-tensor entries, dtypes NumPy cannot hold.
"""
from __future__ import annotations

import argparse
import json
import os
import pickle
import zipfile
from typing import Any, Mapping

import numpy as np

TORCH_EXTS = (".pth", ".pt", ".bin")
WRAPPERS = ("model", "module", "state_dict")


def _fail(path: str, msg: str):
    raise ValueError(f"{path}: {msg}")


def _to_numpy(path: str, key: str, value) -> np.ndarray:
    if isinstance(value, np.ndarray):
        return value
    if type(value).__module__.startswith("torch") and hasattr(value, "detach"):
        t = value.detach().cpu()
        if t.dtype.is_floating_point and t.element_size() < 4:  # float16 / bfloat16 -> float32
            t = t.float()
        return t.numpy()
    _fail(path, f"entry {key!r} is a {type(value).__name__}, not a tensor")


# Clip geometry an official training checkpoint's `args` records (VideoMAE / Mu-MAE argparse names).
GEOMETRY_ARGS = ("num_frames", "input_size")


def unwrap_checkpoint(obj: Mapping[str, Any]) -> tuple[Mapping[str, Any], dict]:
    """(state dict, info) of a training checkpoint {'model'|'module'|'state_dict': sd, 'epoch': ..., ...};
    info holds the wrapper's name and its scalar entries. Anything else comes back unchanged."""
    for wrapper in WRAPPERS:
        if isinstance(obj.get(wrapper), Mapping):
            info = {k: v for k, v in obj.items() if k != wrapper and isinstance(v, (int, float, str))}
            args = obj.get("args")  # the official run's argparse.Namespace: its clip geometry
            geometry = {k: getattr(args, k) for k in GEOMETRY_ARGS if isinstance(getattr(args, k, None), int)}
            return obj[wrapper], {**info, "wrapper": wrapper, **({"args": geometry} if geometry else {})}
    return obj, {}


def _flat_state_dict(path: str, obj: Any) -> tuple[dict[str, np.ndarray], dict]:
    """Unwraps a training checkpoint and checks that every entry is a tensor."""
    if not isinstance(obj, Mapping):
        _fail(path, f"holds a {type(obj).__name__}, not a state dict (a mapping of names to tensors)")
    obj, info = unwrap_checkpoint(obj)
    if not obj:
        _fail(path, "holds an empty state dict")
    return {str(k): _to_numpy(path, str(k), v) for k, v in obj.items()}, info


def _load_torch(path: str):
    try:
        import torch
    except ImportError as e:
        raise ImportError(f"{path}: reading a PyTorch file needs torch (pip install torch); without it, "
                          "convert the state dict to .safetensors or .npz first") from e
    try:
        # Official training checkpoints also store the run's argparse.Namespace ('args'): a plain
        # attribute holder, allowed explicitly; anything else non-tensor is refused.
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        try:
            names = ", ".join(torch.serialization.get_unsafe_globals_in_checkpoint(path))
        except Exception:  # noqa: BLE001 - not a torch archive / pickle at all
            names = ""
        if not names:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            _fail(path, f"is not a PyTorch checkpoint (torch.load: {first})")
        _fail(path, "refused by torch.load(weights_only=True): it holds objects other than tensors and plain "
                    f"containers (classes: {names}); we never unpickle arbitrary code. Re-save its state "
                    "dict with torch.save(model.state_dict(), ...) or convert it to .safetensors")
    except Exception as e:  # noqa: BLE001 - torch raises many kinds (RuntimeError, EOFError, IndexError...)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        _fail(path, f"not a readable PyTorch checkpoint (truncated, corrupted or another format?): {first}")


def _load_safetensors(path: str) -> dict[str, np.ndarray]:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError, TypeError) as e:
        _fail(path, f"not a readable safetensors file (truncated, corrupted, another format, or a dtype NumPy "
                    f"cannot hold such as bfloat16?): {e}")


def _load_npz(path: str) -> dict[str, np.ndarray]:
    try:
        f = np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as e:
        _fail(path, f"not a readable .npz archive (truncated, corrupted or another format?): {e}")
    if not isinstance(f, np.lib.npyio.NpzFile):
        _fail(path, "is a single .npy array, not an .npz archive of named arrays")
    with f:
        try:
            return {k: f[k] for k in f.files}
        except (zipfile.BadZipFile, EOFError, OSError) as e:
            _fail(path, f"not a readable .npz archive (truncated or corrupted?): {e}")
        except ValueError as e:  # object arrays need pickle, which we refuse
            _fail(path, f"holds arrays that can only be read with pickle, which we refuse: {e}")


def _read_json(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        _fail(path, f"is not valid JSON: {e}")


def _load_hf_dir(path: str) -> tuple[dict[str, np.ndarray], dict]:
    hf_config = _read_json(os.path.join(path, "config.json"))
    single, index = os.path.join(path, "model.safetensors"), os.path.join(path, "model.safetensors.index.json")
    if os.path.isfile(single):
        sd = _load_safetensors(single)
    elif os.path.isfile(index):
        weight_map = _read_json(index).get("weight_map")
        if not isinstance(weight_map, dict):
            _fail(index, "has no 'weight_map' (expected a sharded safetensors index)")
        files = sorted(set(weight_map.values()))
        sd = {}
        for name in files:
            sd.update(_load_safetensors(os.path.join(path, name)))
    elif os.path.isfile(os.path.join(path, "pytorch_model.bin")):
        sd, _ = _flat_state_dict(path, _load_torch(os.path.join(path, "pytorch_model.bin")))
    else:
        _fail(path, "has config.json but no model.safetensors, model.safetensors.index.json or pytorch_model.bin")
    return sd, {"hf_config": hf_config}


def load_state_dict(path: str) -> tuple[dict[str, np.ndarray], dict]:
    """(state dict {key: numpy array}, info) from a file or Hugging Face folder (see module docstring).

    info: 'source' (kind), 'wrapper'/'epoch' for training checkpoints, 'hf_config' for HF folders.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file or directory")
    if os.path.isdir(path):
        if not os.path.isfile(os.path.join(path, "config.json")):
            _fail(path, "is a directory without config.json (expected a Hugging Face save_pretrained folder)")
        sd, info = _load_hf_dir(path)
        return sd, {"source": "hf_dir", **info}
    ext = os.path.splitext(path)[1].lower()
    if ext in TORCH_EXTS:
        sd, info = _flat_state_dict(path, _load_torch(path))
        return sd, {"source": "torch", **info}
    if ext == ".safetensors":
        sd, info = _flat_state_dict(path, _load_safetensors(path))
        return sd, {"source": "safetensors", **info}
    if ext == ".npz":
        sd, info = _flat_state_dict(path, _load_npz(path))
        return sd, {"source": "npz", **info}
    _fail(path, f"unknown extension {ext!r}; expected one of {TORCH_EXTS + ('.safetensors', '.npz')} "
                "or a Hugging Face folder")


def save_state_dict(state_dict: Mapping[str, np.ndarray], path: str, *, wrap_model: bool = False,
                    metadata: Mapping[str, Any] | None = None) -> None:
    """Writes a state dict as .pth (torch.save of tensors; `{'model': sd, **metadata}` if wrap_model),
    .safetensors (with the `format: pt` metadata transformers expects) or .npz."""
    ext = os.path.splitext(path)[1].lower()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    arrays = {k: np.ascontiguousarray(v) for k, v in state_dict.items()}
    if ext in TORCH_EXTS:
        import torch

        sd = {k: torch.from_numpy(v.copy()) for k, v in arrays.items()}
        torch.save({"model": sd, **dict(metadata or {})} if wrap_model else sd, path)
    elif ext == ".safetensors":
        from safetensors.numpy import save_file

        save_file(arrays, path, metadata={"format": "pt"})
    elif ext == ".npz":
        np.savez(path, **arrays)
    else:
        _fail(path, f"unknown extension {ext!r}; expected .pth, .pt, .bin, .safetensors or .npz")
