"""VideoMAE V2-style decoder masking (modality decoder_ratio < 1): exact subsets, shapes, loss, FLOPs."""
import jax
import jax.numpy as jnp
import numpy as np

from conftest import make_tiny_config
from mumae_jax.bench import flops
from mumae_jax.core import optim, sharding
from mumae_jax.objectives import mae_loss
from mumae_jax.steps import pretraining_step
from mumae_jax.models import mae, masking


def _config(ratio):
    c = make_tiny_config()
    c.modality.video.decoder_ratio = ratio
    return c


def test_decode_masks_are_exact_subsets_of_the_masks():
    model = mae.from_config(_config(0.5))
    video = model.specs[0]
    assert (video.num_masked, video.num_decoded) == (6, 3)  # 2 slices × int(0.9·4) masked; half decoded
    masks = masking.draw_masks(jax.random.key(0), model.specs, 16)
    decode = masking.draw_decode_masks(jax.random.key(1), model.specs, masks)
    assert list(decode) == ["video"]  # sensors keep decoder_ratio 1
    d, m = np.asarray(decode["video"]), np.asarray(masks["video"])
    assert (d.sum(1) == 3).all() and not (d & ~m).any()
    assert len({tuple(r) for r in d}) > 1  # differs between examples


def test_predictions_and_loss_cover_the_decoded_subset_only():
    model = mae.from_config(_config(0.5))
    video = model.specs[0]
    inputs, masks = pretraining_step.dummy_inputs(model.specs, batch=2)
    rng = np.random.default_rng(0)
    inputs = {k: jnp.asarray(rng.standard_normal(v.shape), jnp.float32) for k, v in inputs.items()}
    decode = masking.draw_decode_masks(jax.random.key(3), model.specs, masks)
    params = model.init(jax.random.key(0), inputs, masks, decode=decode)["params"]
    preds = model.apply({"params": params}, inputs, masks, decode=decode)
    assert preds["video"].shape == (2, video.num_decoded, video.token_dim)
    assert preds["acc_phone"].shape[1] == model.specs[1].num_masked
    total, per = mae_loss.reconstruction_losses(model.specs, preds, inputs, masks, decode)
    targets = mae_loss.modality_targets(video, inputs["video"])
    ids = np.stack([np.flatnonzero(r) for r in np.asarray(decode["video"])])
    want = np.mean((np.asarray(preds["video"]) - np.take_along_axis(np.asarray(targets), ids[..., None], 1)) ** 2)
    np.testing.assert_allclose(per["video"], want, rtol=1e-6)
    # the decoder sees fewer tokens, so the step costs fewer FLOPs
    assert flops.from_config(_config(0.5))["forward_decoder_video"] < flops.from_config(_config(1.0))["forward_decoder_video"]


def test_train_step_runs_with_decoder_masking():
    config = _config(0.5)
    model = mae.from_config(config)
    mesh = sharding.make_mesh()
    tx, schedule = optim.make_optimizer(config, 10, 1)
    init, _, state_sh = pretraining_step.state_initializer(model, tx, jax.random.key(0), mesh)
    step = pretraining_step.make_train_step(model, tx, schedule, 0, 8, mesh, state_sh)
    rng = np.random.default_rng(0)
    batch = {s.name: jax.device_put(rng.standard_normal((8,) + s.input_shape).astype(np.float32),
                                    sharding.batch_sharding(mesh)) for s in model.specs}
    state, metrics = step(init(), batch)
    assert np.isfinite(float(metrics["loss"])) and int(state["step"]) == 1
