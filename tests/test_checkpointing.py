"""Orbax checkpoints restore exactly, into the shardings of the current (possibly different) mesh."""
import jax
import numpy as np
import pytest

from mumae_jax.core import checkpointing, optim, sharding
from mumae_jax.steps import pretraining_step
from mumae_jax.models import mae


def test_save_on_8_devices_restore_on_1(tiny_config, tmp_path):
    model = mae.from_config(tiny_config)
    tx, _ = optim.make_optimizer(tiny_config, 10, 2)
    init8, _, _ = pretraining_step.state_initializer(model, tx, jax.random.key(3), sharding.make_mesh())
    state = init8()
    ckpt = checkpointing.Checkpointer(str(tmp_path / "ckpt"), keep=1)
    ckpt.save(5, state, {"step": 5})
    ckpt.save(7, state, {"step": 7})
    ckpt.wait()
    assert ckpt.all_steps() == [7]  # keep=1
    one = sharding.make_mesh(jax.devices()[:1])
    _, abstract1, _ = pretraining_step.state_initializer(model, tx, jax.random.key(0), one)
    restored, meta = ckpt.restore(7, abstract1)
    ckpt.close()
    assert meta == {"step": 7}
    leaf = restored["params"]["mask_token"]
    assert leaf.sharding.device_set == {jax.devices()[0]}
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(restored), jax.device_get(state))


def test_a_damaged_newest_checkpoint_is_moved_aside_and_the_next_restores(tmp_path, caplog):
    state = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(3, np.float32)}
    ckpt = checkpointing.Checkpointer(str(tmp_path / "checkpoints"), keep=3)
    for step in (2, 4):
        ckpt.save(step, jax.tree.map(lambda x, s=step: x * s, state), {"step": step})
    ckpt.wait()
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state)
    # readable but another model's: an error, and nothing is moved
    other = {**abstract, "extra": jax.ShapeDtypeStruct((3,), np.float32)}
    with pytest.raises(ValueError, match=r"checkpoints/4 is readable but does not fit"):
        ckpt.restore_newest(other)
    assert ckpt.all_steps() == [2, 4]

    (tmp_path / "checkpoints" / "4" / "meta" / "metadata").unlink()  # a file lost from the newest
    with caplog.at_level("WARNING"):
        step, restored, meta = ckpt.restore_newest(abstract)
    assert step == 2 and meta == {"step": 2}
    np.testing.assert_array_equal(restored["w"], state["w"] * 2)
    assert ckpt.all_steps() == [2] and "checkpoints/4 cannot be restored" in caplog.text
    moved = list((tmp_path / "damaged_checkpoints").iterdir())
    assert len(moved) == 1 and moved[0].name.startswith("4-") and (moved[0] / "state").is_dir()  # kept
    ckpt.close()
    assert checkpointing.Checkpointer(str(tmp_path / "empty"), keep=1).restore_newest(abstract) is None


@pytest.mark.parametrize("raised, converted", [
    (ValueError("OUT_OF_RANGE: Error writing x in OCDBT database: Failed to write 592272 bytes to file 5: "
                "File too large [os_error_code='27']"), "File too large"),
    (OSError(28, "No space left on device"), "No space left on device"),
    (ValueError("an orbax error that is not about the disk"), None),
])
def test_a_failed_checkpoint_write_is_one_clear_oserror(tmp_path, monkeypatch, raised, converted):
    ckpt = checkpointing.Checkpointer(str(tmp_path / "ckpt"), keep=1)

    def fail(*a, **k):
        raise raised

    monkeypatch.setattr(ckpt.manager, "wait_until_finished", fail)
    with pytest.raises(type(raised) if converted is None else OSError) as e:
        ckpt.wait()
    if converted is None:
        assert e.value is raised  # anything else passes through unchanged
    else:
        assert str(e.value).startswith(f"writing a checkpoint under {tmp_path / 'ckpt'} failed: {converted}.")
        assert "newest finished checkpoint (none yet)" in str(e.value)
