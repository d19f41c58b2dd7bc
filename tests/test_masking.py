"""Masks: exact counts, tube constancy, synchronized sensors, determinism, aligned and explicit masks."""
import jax
import numpy as np
import pytest

from mumae_jax.configs import pretrain
from mumae_jax.models import masking, modality


def _specs(arg=""):
    c = pretrain.get_config(arg)
    return modality.specs_from_config(tuple(c.modalities), c.modality)


def test_paper_counts_tube_and_synchronized():
    specs = _specs()  # paper shapes: 16×224² video, 4 sensors × 16 tokens
    masks = jax.jit(lambda k: masking.draw_masks(k, specs, 6))(jax.random.key(0))
    video = np.asarray(masks["video"]).reshape(6, 8, 196)
    assert (video.sum(-1) == 176).all()  # 176 of 196 masked in every temporal slice
    assert (video == video[:, :1]).all()  # same spatial pattern in all 8 slices (tube)
    assert (np.asarray(masks["video"]).sum(-1) == 1408).all()
    sensors = [np.asarray(masks[n]) for n in pretrain.SENSORS]
    for m in sensors:
        assert m.shape == (6, 16) and (m.sum(-1) == 14).all()
        np.testing.assert_array_equal(m, sensors[0])  # one mask shared by all four sensors
    # masks are drawn per example
    assert len({tuple(r) for r in sensors[0]}) > 1
    assert len({tuple(r) for r in video[:, 0]}) > 1


def test_same_key_same_mask_and_different_key_differs():
    specs = _specs()
    a = masking.draw_masks(jax.random.key(7), specs, 4)
    b = masking.draw_masks(jax.random.key(7), specs, 4)
    c = masking.draw_masks(jax.random.key(8), specs, 4)
    for n in a:
        np.testing.assert_array_equal(a[n], b[n])
    assert any(not np.array_equal(a[n], c[n]) for n in a)
    # example b's masks come from split(key, batch)[b] alone
    one = masking.example_masks(jax.random.split(jax.random.key(7), 4)[2], specs)
    for n in a:
        np.testing.assert_array_equal(a[n][2], one[n])


def test_independent_sensor_masks_differ():
    specs = _specs("sensor_masking=independent")
    m = masking.draw_masks(jax.random.key(0), specs, 32)
    for n in pretrain.SENSORS:
        assert (np.asarray(m[n]).sum(-1) == 14).all()
    assert not np.array_equal(m["acc_phone"], m["acc_watch"])


def test_random_video_mask_counts():
    specs = _specs("video_masking=random")
    m = np.asarray(masking.draw_masks(jax.random.key(0), specs, 4)["video"])
    assert (m.sum(-1) == int(0.9 * 1568)).all()
    per_slice = m.reshape(4, 8, 196).sum(-1)
    assert not (per_slice == per_slice[:, :1]).all()  # not a tube


def test_time_aligned_sensor_mask_follows_visible_video_slots():
    specs = _specs("sensor_masking=time_aligned,video_masking=random")
    by = {s.name: s for s in specs}
    video = by["video"]
    # A video mask whose temporal slot 5 is fully visible and the other slots show one position each.
    vm = np.ones((8, 196), bool)
    vm[5] = False
    vm[:, 0] = False
    m = masking.time_aligned_mask(jax.random.key(0), by["acc_phone"], vm.reshape(-1), video)
    m = np.asarray(m)
    assert m.sum() == 14
    # 16 contiguous tokens over 8 slots: tokens 10 and 11 lie in slot 5
    np.testing.assert_array_equal(np.flatnonzero(~m), [10, 11])
    drawn = masking.draw_masks(jax.random.key(1), specs, 3)
    for n in pretrain.SENSORS:
        np.testing.assert_array_equal(drawn[n], drawn["acc_phone"])
        assert (np.asarray(drawn[n]).sum(-1) == 14).all()


def test_visible_ids_ascending():
    mask = np.array([[True, False, True, False, True]])
    vis, msk = masking.visible_and_masked_ids(mask, 2)
    np.testing.assert_array_equal(vis, [[1, 3]])
    np.testing.assert_array_equal(msk, [[0, 2, 4]])


def test_check_masks_rejects_wrong_counts():
    specs = _specs()
    good = {s.name: np.broadcast_to(np.arange(s.num_tokens) < s.num_masked, (2, s.num_tokens)) for s in specs}
    masking.check_masks(good, specs, 2)
    bad = dict(good)
    bad["gyro"] = np.zeros((2, 16), bool)
    with pytest.raises(ValueError, match="exactly 14 of 16"):
        masking.check_masks(bad, specs, 2)
