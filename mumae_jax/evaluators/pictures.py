"""Reconstruction pictures: original, masked and reconstructed video (PNG grid and GIF) and the four
sensor streams with their masked samples shaded (PNG).

    python -m mumae_jax.evaluators.pictures --workdir=RUN [--step=N] [--example=0] [--seed=0] [--out=DIR]

draws clip `--example` of the run's pretraining data (its config.json), masks it with `--seed` and writes
`<out>/example<k>_step<N>_video.png`, `..._video.gif` and `..._sensors.png` (out: RUN/pictures). Masked
tubes and samples are reconstructed from the predictions *un-normalised with the original patch's own
mean and std* (reconstruction.py); the pictures say so.
During pretraining, `config.evals.pictures` (type 'pictures', every_steps > 0) writes the same pictures of one
clip (`example`, default 0) every N steps (`PicturesEvaluator`; process 0 writes).
Needs Pillow and matplotlib (the `viz` extra).
"""
from __future__ import annotations

import os
from typing import Mapping, Sequence

import numpy as np

from mumae_jax.evaluators import reconstruction
from mumae_jax.models import kinds

NOTE = "masked tubes: prediction un-normalised with the original tube's own mean/std"


def _u8(video: np.ndarray) -> np.ndarray:
    return (np.clip(video, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def video_grid(rec: Mapping[str, np.ndarray], title: str = ""):
    """PIL image: rows original / masked / reconstruction, one column per frame, with labels."""
    from PIL import Image, ImageDraw

    rows = [("original", rec["original"]), ("masked", rec["masked"]), ("reconstruction", rec["reconstruction"])]
    t, h, w, _ = rec["original"].shape
    label_w, head, pad = 110, 28, 2
    img = Image.new("RGB", (label_w + t * (w + pad), head + len(rows) * (h + pad)), "white")
    draw = ImageDraw.Draw(img)
    draw.text((4, 2), title, fill="black")
    draw.text((4, 14), NOTE, fill="black")
    for r, (name, video) in enumerate(rows):
        y = head + r * (h + pad)
        draw.text((4, y + h // 2 - 5), name, fill="black")
        frames = _u8(video)
        for f in range(t):
            img.paste(Image.fromarray(frames[f]), (label_w + f * (w + pad), y))
    return img


def write_video_gif(rec: Mapping[str, np.ndarray], path, ms_per_frame: int = 200) -> None:
    """Animated GIF (to a path or binary file): original | masked | reconstruction side by side, one frame
    per video frame."""
    from PIL import Image

    panels = [_u8(rec[k]) for k in ("original", "masked", "reconstruction")]
    sep = np.full(panels[0].shape[:3] + (3,), 255, np.uint8)[:, :, :2]
    frames = np.concatenate([panels[0], sep, panels[1], sep, panels[2]], axis=2)
    images = [Image.fromarray(f) for f in frames]
    images[0].save(path, format="GIF", save_all=True, append_images=images[1:], duration=ms_per_frame, loop=0)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[(start, stop)] of the True runs of a 1-D bool array."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)))


def sensor_figure(recs: Mapping[str, Mapping[str, np.ndarray]], path: str, title: str = "") -> None:
    """One panel per sensor: each axis's original (solid) and reconstruction (dashed), masked samples shaded."""
    from matplotlib.figure import Figure  # no pyplot: leaves a notebook's backend alone

    names = list(recs)
    fig = Figure(figsize=(9, 2.1 * len(names)))
    axes = fig.subplots(len(names), 1, sharex=True, squeeze=False)
    colors = ("tab:red", "tab:green", "tab:blue", "tab:purple", "tab:orange", "tab:brown")
    for ax, name in zip(axes[:, 0], names):
        r = recs[name]
        for a, b in _runs(r["sample_mask"]):
            ax.axvspan(a - 0.5, b - 0.5, color="0.85", lw=0)
        for c in range(r["original"].shape[1]):
            ax.plot(r["original"][:, c], color=colors[c % len(colors)], lw=1.0)
            ax.plot(r["reconstruction"][:, c], color=colors[c % len(colors)], lw=1.0, ls="--")
        ax.set_ylabel(name)
    axes[-1, 0].set_xlabel("sample")
    fig.suptitle((title + "\n" if title else "") + "grey: masked samples; solid: input; dashed: reconstruction "
                 "(masked tokens un-normalised with the original token's own mean/std)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def episode_figure(result: Mapping, path, title: str = "") -> None:
    """PNG (local or gs:// path) of one predicted episode (`oneshot_training.predict_episode`): the middle frame of
    every support clip (one column per class, one row per shot), and per query its middle frame with its true
    class next to the predicted class probabilities."""
    from etils import epath
    from matplotlib.figure import Figure

    ep, probs = result["episode"], np.asarray(result["probabilities"])
    support, query = np.asarray(result["support_video"]), np.asarray(result["query_video"])
    labels = [int(y) for y in result["support_labels"]]
    way, nq = probs.shape[-1], len(query)
    shots = max(labels.count(k) for k in range(way))
    cols = max(way, 2)
    fig = Figure(figsize=(2.0 * cols, 2.3 * (shots + nq)))
    grid = fig.add_gridspec(shots + nq, cols)
    mid = support.shape[1] // 2
    for i, y in enumerate(labels):
        ax = fig.add_subplot(grid[labels[:i].count(y), y])
        ax.imshow(np.clip(support[i, mid], 0, 1))
        ax.set_title(f"{y}: {ep.classes[y]}", fontsize=8)
        ax.axis("off")
    for q in range(nq):
        truth, pred = int(result["query_labels"][q]), int(result["prediction"][q])
        ax = fig.add_subplot(grid[shots + q, 0])
        ax.imshow(np.clip(query[q, mid], 0, 1))
        ax.set_title(f"query {q}: {ep.classes[truth]}", fontsize=8)
        ax.axis("off")
        ax = fig.add_subplot(grid[shots + q, 1:])
        colors = ["tab:green" if k == truth else "tab:red" if k == pred else "0.6" for k in range(way)]
        ax.barh(range(way), probs[q], color=colors)
        ax.set_yticks(range(way), [f"{k}: {c}" for k, c in enumerate(ep.classes)], fontsize=8)
        ax.invert_yaxis()
        ax.set_xlim(0, 1)
        ax.set_xlabel("probability (softmax of the CAM logits)", fontsize=8)
        verdict = "right" if pred == truth else f"wrong (true: {truth})"
        ax.set_title(f"predicted {pred}: {ep.classes[pred]}, {verdict}", fontsize=9)
    fig.suptitle((title + "\n" if title else "") + f"support ({shots} clip(s) per class, middle frame) and "
                 f"{nq} quer{'y' if nq == 1 else 'ies'}", fontsize=9)
    fig.tight_layout()
    out = epath.Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("wb") as f:
        fig.savefig(f, format="png", dpi=90)


def write_pictures(specs: Sequence, inputs, masks, preds, out_dir: str, prefix: str, index: int = 0,
                   title: str = "") -> list[str]:
    """Writes the pictures of example `index` of a batch; returns the paths written."""
    from etils import epath

    recs = reconstruction.reconstruct_all(specs, inputs, masks, preds, index)
    out = epath.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for s in specs:
        if not kinds.of(s).frames:
            continue
        png, gif = out / f"{prefix}_{s.name}.png", out / f"{prefix}_{s.name}.gif"
        with png.open("wb") as f:
            video_grid(recs[s.name], title).save(f, format="PNG")
        with gif.open("wb") as f:
            write_video_gif(recs[s.name], f)
        written += [str(png), str(gif)]
    sensors = {s.name: recs[s.name] for s in specs if not kinds.of(s).frames}
    if sensors:
        path = out / f"{prefix}_sensors.png"
        with path.open("wb") as f:
            sensor_figure(sensors, f, title)
        written.append(str(path))
    return written


def full_decoding(config):
    """A copy of a pretraining config whose decoders reconstruct every masked token (decoder_ratio 1;
    the parameters are the same)."""
    full = config.copy_and_resolve_references()
    full.unlock()
    for name in full.modalities:
        if "decoder_ratio" in full.modality[name]:
            full.modality[name].decoder_ratio = 1.0
    return full


def load_clip(config, specs: Sequence, example: int) -> dict:
    """Clip `example` of a pretraining config's data order (its augmentation included) as a batch of one:
    {modality: [1, ...]} numpy arrays."""
    from mumae_jax.data import sources
    from mumae_jax.data.geometry import ClipGeometry

    geometry = ClipGeometry.from_specs(specs, config.input.frame_stride)
    batches, _ = sources.get_source(config.data).pretrain_input(geometry, global_batch_size=1, seed=config.seed,
                                                               start_step=example, augment=config.get("augment"))
    try:
        batch = next(batches)
    finally:
        batches.close()
    return {s.name: np.asarray(batch[s.name]) for s in specs}


def predict_clip(workdir: str, step: int = -1, example: int = 0, seed: int = 0):
    """(specs, inputs, masks, preds, step) for clip `example` of a run's pretraining data (batch of one).

    The decoders reconstruct every masked token (decoder_ratio is set to 1: same parameters)."""
    import jax

    from mumae_jax.models import mae, masking
    from mumae_jax.weights import pretrained

    config, params, step = pretrained.load_params(workdir, step)
    config = full_decoding(config)
    model = mae.from_config(config)
    if not any(k.startswith("decoder_") for k in params):
        raise ValueError(f"{workdir} holds encoder parameters only (no decoders): nothing to reconstruct with")
    inputs = load_clip(config, model.specs, example)
    masks = jax.device_get(masking.draw_masks(jax.random.key(seed), model.specs, 1))
    preds = jax.device_get(jax.jit(model.apply)({"params": jax.device_get(params)}, inputs, masks))
    return model.specs, inputs, masks, preds, step


def make_evaluator(name: str, settings, stage):
    """The `pictures` evaluator type (`evaluators/common.py`) of the pretraining stage: every
    `settings.every_steps` steps, clip `settings.example`; stage: config, mesh, workdir."""
    if int(settings.get("every_steps", 0)) <= 0:
        return None
    return PicturesEvaluator(stage["config"], stage["mesh"], stage["workdir"], int(settings.every_steps),
                             int(settings.get("example", 0)), name)


class PicturesEvaluator:
    """Periodic reconstruction pictures during pretraining: the same clip every time (clip `example` of the run's
    pretraining data, masked with key(config.seed)), so the pictures show the model's progress on one example.
    Every process predicts (the parameters are global arrays); process 0 writes `<workdir>/pictures/step<N>_*`."""

    def __init__(self, config, mesh, workdir: str, every: int, example: int = 0, name: str = "pictures"):
        import jax

        from mumae_jax.core import sharding
        from mumae_jax.models import mae, masking

        try:
            import matplotlib  # noqa: F401
            import PIL  # noqa: F401
        except ImportError as e:
            raise ImportError(f"config.evals.{name} (pictures) needs matplotlib and Pillow (pip install "
                              f"'mumae_jax[viz]'): {e}") from e
        self.name, self.every, self.example, self.workdir = name, every, example, workdir
        model = mae.from_config(full_decoding(config))
        self.specs = model.specs
        rep = sharding.replicated(mesh)
        self.inputs = load_clip(config, model.specs, self.example)
        self.masks = jax.device_get(masking.draw_masks(jax.random.key(config.seed), model.specs, 1))
        inputs, masks = jax.tree.map(lambda x: jax.make_array_from_process_local_data(rep, x),
                                     (self.inputs, self.masks))
        predict = jax.jit(lambda params, x, m: model.apply({"params": params}, x, m), out_shardings=rep)
        self._predict = lambda params: jax.device_get(predict(params, inputs, masks))
        self._main = jax.process_index() == 0

    def run(self, step: int, state) -> dict:
        preds = self._predict(state["params"])
        if self._main:
            write_pictures(self.specs, self.inputs, self.masks, preds, os.path.join(self.workdir, "pictures"),
                           f"step{step:07d}", title=f"step {step}, example {self.example}")
        return {}


def main(argv):
    from absl import flags

    del argv
    f = flags.FLAGS
    specs, inputs, masks, preds, step = predict_clip(f.workdir, f.step, f.example, f.seed)
    out = f.out or os.path.join(f.workdir, "pictures")
    title = f"{f.workdir}, step {step}, example {f.example}, mask seed {f.seed}"
    for path in write_pictures(specs, inputs, masks, preds, out, f"example{f.example}_step{step}", title=title):
        print(path)


if __name__ == "__main__":
    from absl import flags

    from mumae_jax.core import cli

    cli.quiet_environment()
    flags.DEFINE_string("workdir", None, "Pretraining run (or converted directory with decoders).")
    flags.DEFINE_integer("step", -1, "Checkpoint step (default -1: the latest).")
    flags.DEFINE_integer("example", 0, "Index of the clip in the run's pretraining data order (default 0).")
    flags.DEFINE_integer("seed", 0, "Mask seed (default 0).")
    flags.DEFINE_string("out", "", "Output directory (default: <workdir>/pictures).")
    flags.mark_flags_as_required(["workdir"])
    cli.run_absl(main)
