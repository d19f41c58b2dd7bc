"""Orbax checkpoints restore exactly, into the shardings of the current (possibly different) mesh."""
import jax
import numpy as np

from mumae_jax import checkpointing, optim, sharding, train_state
from mumae_jax.models import mae


def test_save_on_8_devices_restore_on_1(tiny_config, tmp_path):
    model = mae.from_config(tiny_config)
    tx, _ = optim.make_optimizer(tiny_config, 10, 2)
    init8, _, _ = train_state.train_state_initializer(model, tx, jax.random.key(3), sharding.make_mesh())
    state = init8()
    ckpt = checkpointing.Checkpointer(str(tmp_path / "ckpt"), keep=1)
    ckpt.save(5, state, {"step": 5})
    ckpt.save(7, state, {"step": 7})
    ckpt.wait()
    assert ckpt.all_steps() == [7]  # keep=1
    one = sharding.make_mesh(jax.devices()[:1])
    _, abstract1, _ = train_state.train_state_initializer(model, tx, jax.random.key(0), one)
    restored, meta = ckpt.restore(7, abstract1)
    ckpt.close()
    assert meta == {"step": 7}
    leaf = restored["params"]["mask_token"]
    assert leaf.sharding.device_set == {jax.devices()[0]}
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(restored), jax.device_get(state))
