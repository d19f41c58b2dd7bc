"""TF video ops (`mumae_jax.data.video_ops`) against numpy references written here."""
import numpy as np
import pytest
import tensorflow as tf

from mumae_jax.data import video_ops as V

SCALES = (1.0, 0.875, 0.75, 0.66)
SEEDS = [np.array([s, 1000 + 7 * s], np.int64) for s in range(300)]
_INT = tf.TensorSpec([], tf.int32)
_SEED = tf.TensorSpec([2], tf.int64)


# ---------------------------------------------------------------------------------- numpy references

def ref_candidates(h, w, out=224, scales=SCALES, max_distort=1):
    """GroupMultiScaleCrop crop pairs (w, h), official order."""
    base = min(h, w)
    sizes = [int(base * s) for s in scales]
    sizes = [out if abs(x - out) < 3 else x for x in sizes]
    return [(sizes[j], sizes[i]) for i in range(len(sizes)) for j in range(len(sizes))
            if abs(i - j) <= max_distort]


def ref_offsets(h, w, crop_w, crop_h, more=True):
    ws, hs = (w - crop_w) // 4, (h - crop_h) // 4
    ret = [(0, 0), (4 * ws, 0), (0, 4 * hs), (4 * ws, 4 * hs), (2 * ws, 2 * hs)]
    if more:
        ret += [(0, 2 * hs), (4 * ws, 2 * hs), (2 * ws, 4 * hs), (2 * ws, 0),
                (ws, hs), (3 * ws, hs), (ws, 3 * hs), (3 * ws, 3 * hs)]
    return ret


def ref_pretrain_indices(n, start, num=16, stride=2):
    """The official 1-based TSN loader loop, transcribed."""
    offset, out = start + 1, []
    for _ in range(num):
        out.append(offset - 1)
        if offset + stride < n:
            offset += stride
    return out


def ref_linspace(start, end, num):
    return [int(f) for f in np.linspace(start, end, num)]


def _clip(t=3, h=256, w=340, dtype=np.uint8, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(t, h, w, 3)).astype(dtype)


# ---------------------------------------------------------------------------------- multiscale crop

def test_candidates_256x340_official_list():
    got = [tuple(map(int, p)) for p in zip(*[c.numpy() for c in V.multiscale_crop_candidates(256, 340)])]
    assert got == [(256, 256), (224, 256), (256, 224), (224, 224), (192, 224),
                   (224, 192), (192, 192), (168, 192), (192, 168), (168, 168)]
    assert got == ref_candidates(256, 340)


@pytest.mark.parametrize("hw", [(226, 300), (258, 258), (255, 400), (1080, 1920), (1920, 1080), (480, 640)])
def test_candidates_match_reference_incl_snapping(hw):
    got = [tuple(map(int, p)) for p in zip(*[c.numpy() for c in V.multiscale_crop_candidates(*hw)])]
    assert got == ref_candidates(*hw)
    if hw == (226, 300):
        assert got[0] == (224, 224)  # 226 is within 3 px of 224 → snapped
    if hw == (258, 258):
        assert (224, 224) in got  # int(258 * .875) = 225 → snapped


@pytest.mark.parametrize("hw,more", [((256, 340), True), ((480, 640), True), ((256, 340), False)])
def test_crop_params_on_grid_and_cover_all_choices(hw, more):
    h, w = hw
    fn = tf.function(lambda a, b, s: V.multiscale_crop_params(a, b, s, more_fix_crop=more),
                     input_signature=[_INT, _INT, _SEED])
    pairs = ref_candidates(h, w)
    seen_pairs, seen_pos = set(), set()
    for seed in SEEDS:
        p = {k: int(v) for k, v in fn(h, w, seed).items()}
        assert (p["crop_w"], p["crop_h"]) == pairs[p["pair_index"]]
        offsets = ref_offsets(h, w, p["crop_w"], p["crop_h"], more)
        assert (p["offset_x"], p["offset_y"]) == offsets[p["position_index"]]
        assert p["offset_x"] + p["crop_w"] <= w and p["offset_y"] + p["crop_h"] <= h
        seen_pairs.add(p["pair_index"])
        seen_pos.add(p["position_index"])
    assert seen_pairs == set(range(10))
    assert seen_pos == set(range(13 if more else 5))


def test_multiscale_crop_output_is_resized_numpy_crop():
    frames = _clip()
    for seed in SEEDS[:4]:
        out, p = V.multiscale_crop(frames, seed)
        assert out.shape == (3, 224, 224, 3) and out.dtype == tf.uint8
        y, x, ch, cw = (int(p[k]) for k in ("offset_y", "offset_x", "crop_h", "crop_w"))
        crop = frames[:, y:y + ch, x:x + cw, :].astype(np.float32)
        want = tf.image.resize(crop, [224, 224], method="bilinear", antialias=True).numpy()
        np.testing.assert_array_equal(out.numpy(), np.clip(np.round(want), 0, 255).astype(np.uint8))


def test_multiscale_crop_same_crop_on_every_frame():
    base = np.random.default_rng(3).uniform(0, 100, size=(1, 256, 340, 3)).astype(np.float32)
    frames = base + 10.0 * np.arange(5, dtype=np.float32)[:, None, None, None]
    for seed in SEEDS[:5]:
        out, _ = V.multiscale_crop(frames, seed)
        out = out.numpy()
        assert out.shape == (5, 224, 224, 3) and out.dtype == np.float32
        for t in range(5):  # bilinear resize is linear: a per-frame constant shift survives exactly(ish)
            np.testing.assert_allclose(out[t] - out[0], 10.0 * t, atol=1e-3)


def test_multiscale_crop_seeds():
    frames = _clip()
    a, pa = V.multiscale_crop(frames, SEEDS[1])
    b, pb = V.multiscale_crop(frames, SEEDS[1])
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    params = {tuple(int(v) for v in V.multiscale_crop_params(256, 340, s).values()) for s in SEEDS[:20]}
    assert len(params) > 5


# ---------------------------------------------------------------------------------- temporal sampling

def test_pretrain_indices_hand_cases():
    fn = tf.function(lambda n, s: V.pretrain_frame_indices(n, 16, 2, seed=s), input_signature=[_INT, _SEED])
    starts = set()
    for seed in SEEDS[:200]:
        idx = fn(100, seed).numpy()
        start = int(idx[0])
        assert 0 <= start <= 100 - 32
        np.testing.assert_array_equal(idx, start + 2 * np.arange(16))
        starts.add(start)
    assert len(starts) > 40
    for seed in SEEDS[:20]:  # short videos start at 0 and repeat the last frame reached
        np.testing.assert_array_equal(fn(20, seed).numpy(), list(range(0, 20, 2)) + [18] * 6)
        np.testing.assert_array_equal(fn(19, seed).numpy(), list(range(0, 17, 2)) + [16] * 7)
        np.testing.assert_array_equal(fn(32, seed).numpy(), np.arange(0, 32, 2))
        np.testing.assert_array_equal(fn(1, seed).numpy(), np.zeros(16))
    for n in (1, 2, 3, 10, 19, 20, 31, 32, 33, 34, 50, 100):
        for seed in SEEDS[:10]:
            got = fn(n, seed).numpy()
            assert got.dtype == np.int32 and got.shape == (16,)
            np.testing.assert_array_equal(got, ref_pretrain_indices(n, int(got[0])))
    clip = V.pretrain_frame_indices(19, seed=SEEDS[0], pad_mode="clip").numpy()
    np.testing.assert_array_equal(clip, np.minimum(np.arange(0, 32, 2), 18))


def test_episode_indices_hand_cases():
    fn = tf.function(lambda n, s: V.episode_frame_indices(n, 8, s), input_signature=[_INT, _SEED])
    for seed in SEEDS[:10]:
        np.testing.assert_array_equal(fn(8, seed).numpy(), np.arange(8))
    np.testing.assert_array_equal(V.episode_frame_indices(8).numpy(), np.arange(8))
    # eval (seed=None): centre of the jitter ranges
    np.testing.assert_array_equal(V.episode_frame_indices(10).numpy(), ref_linspace(0, 9, 8))  # pad 1
    np.testing.assert_array_equal(V.episode_frame_indices(40).numpy(), ref_linspace(2, 37, 8))  # pad 5
    np.testing.assert_array_equal(V.episode_frame_indices(9).numpy(), ref_linspace(0, 8, 8))  # pad 0
    np.testing.assert_array_equal(V.episode_frame_indices(5).numpy(), [0, 0, 1, 1, 2, 2, 3, 4])  # n < 8
    np.testing.assert_array_equal(V.episode_frame_indices(1).numpy(), np.zeros(8))
    np.testing.assert_array_equal(V.episode_frame_indices(40).numpy(), V.episode_frame_indices(40).numpy())
    # train: start ~ U{0..pad}, end ~ U{n-1-pad..n-1}, every combination reachable
    for n, pad in ((10, 1), (40, 5), (14, 3), (500, 5)):
        windows = set()
        for seed in SEEDS[:200]:
            got = fn(n, seed).numpy()
            start, end = (int(v) for v in V.episode_frame_window(n, 8, seed))
            assert 0 <= start <= pad and n - 1 - pad <= end <= n - 1
            np.testing.assert_array_equal(got, ref_linspace(start, end, 8))
            windows.add((start, end))
        assert windows == {(s, e) for s in range(pad + 1) for e in range(n - 1 - pad, n)}
    for seed in SEEDS[:5]:  # pad < 1 → full span even in training
        np.testing.assert_array_equal(fn(9, seed).numpy(), ref_linspace(0, 8, 8))
        np.testing.assert_array_equal(fn(3, seed).numpy(), ref_linspace(0, 2, 8))


def test_zero_frames_raise():
    with pytest.raises(tf.errors.InvalidArgumentError, match="no frames"):
        V.episode_frame_indices(0)
    with pytest.raises(tf.errors.InvalidArgumentError, match="no frames"):
        V.pretrain_frame_indices(0, seed=SEEDS[0])


# ---------------------------------------------------------------------------------- one-shot spatial ops

def test_resize_short_side_keeps_aspect():
    for (h, w), want in {(240, 320): (256, 341), (320, 240): (341, 256), (256, 256): (256, 256),
                         (1080, 1920): (256, 455), (256, 340): (256, 340)}.items():
        frames = np.full((2, h, w, 3), 77, np.uint8)
        out = V.resize_short_side(frames, 256)
        assert tuple(out.shape) == (2,) + want + (3,) and out.dtype == tf.uint8
        assert np.all(out.numpy() == 77)
    frames = _clip(2, 256, 340)
    np.testing.assert_array_equal(V.resize_short_side(frames, 256).numpy(), frames)  # already 256: identity
    f = np.linspace(0, 255, 320, dtype=np.float32)[None, None, :, None] * np.ones((1, 240, 1, 3), np.float32)
    out = V.resize_short_side(f, 256).numpy()  # horizontal ramp stays a monotone ramp
    assert out.dtype == np.float32 and np.all(np.diff(out[0, 100, :, 0]) > 0)


def test_center_crop_exact_pixels():
    frames = _clip(2, 256, 341)
    out = V.center_crop(frames, 224).numpy()
    # (341 - 224) / 2 = 58.5 → 58 (round half to even, Python's round); (256 - 224) / 2 = 16
    np.testing.assert_array_equal(out, frames[:, 16:240, 58:282])
    frames = _clip(1, 227, 229)  # 1.5 → 2, 2.5 → 2
    np.testing.assert_array_equal(V.center_crop(frames, 224).numpy(), frames[:, 2:226, 2:226])
    np.testing.assert_array_equal(V.center_crop(_clip(1, 224, 224), 224).numpy(), _clip(1, 224, 224))
    with pytest.raises(tf.errors.InvalidArgumentError, match="smaller than"):
        V.center_crop(_clip(1, 200, 300), 224)


def test_flip_whole_clip_or_nothing():
    frames = _clip(4, 16, 20)
    fn = tf.function(V.random_flip_clip, input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8), _SEED])
    flips = []
    for seed in SEEDS[:200]:
        out = fn(frames, seed).numpy()
        if np.array_equal(out, frames):
            flips.append(False)
        else:
            np.testing.assert_array_equal(out, frames[:, :, ::-1])  # every frame flipped
            flips.append(True)
        np.testing.assert_array_equal(out, V.random_flip_clip(frames, seed).numpy())  # eager == graph
    assert 0.35 < np.mean(flips) < 0.65


def test_normalisation_values():
    px = np.array([[[[0, 128, 255]]]], np.uint8)  # [1,1,1,3]
    np.testing.assert_allclose(V.to_unit_range(px).numpy(), px / 255.0, rtol=1e-6)
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    want = (px / 255.0 - mean) / std
    got = V.imagenet_normalize(px).numpy()
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(V.imagenet_normalize(np.zeros((1, 1, 1, 3), np.uint8)).numpy()[0, 0, 0],
                               [-2.117904, -2.035714, -1.804444], atol=1e-5)
    np.testing.assert_allclose(V.imagenet_normalize(px.astype(np.float32)).numpy(), got, atol=1e-6)


def test_pipelines_shapes_and_ranges():
    frames = _clip(8, 240, 320)
    a = V.oneshot_clip_transform(frames).numpy()
    assert a.shape == (8, 224, 224, 3) and a.dtype == np.float32 and 0 <= a.min() and a.max() <= 1
    want = V.center_crop(V.resize_short_side(frames, 256), 224).numpy() / np.float32(255.0)
    np.testing.assert_allclose(a, want, rtol=1e-6)
    b = V.pretrain_clip_transform(frames, SEEDS[2]).numpy()
    assert b.shape == (8, 224, 224, 3) and b.dtype == np.float32
    np.testing.assert_allclose(b, V.imagenet_normalize(V.multiscale_crop(frames, SEEDS[2])[0]).numpy())


# ---------------------------------------------------------------------------------- eager == tf.data

def test_tf_data_map_equals_eager_dynamic_shapes():
    clips = [_clip(3, 256, 340, seed=1), _clip(2, 240, 320, seed=2), _clip(4, 300, 260, seed=3)]
    seeds = SEEDS[10:13]
    ds = tf.data.Dataset.from_generator(
        lambda: iter(zip(clips, seeds)),
        output_signature=(tf.TensorSpec([None, None, None, 3], tf.uint8), _SEED))

    def fn(frames, seed):
        s = tf.unstack(tf.random.experimental.stateless_split(seed, 4))
        n = tf.shape(frames)[0] * 13
        crop, params = V.multiscale_crop(frames, s[0])
        return dict(crop=crop, params=params, pre=V.pretrain_clip_transform(frames, s[0]),
                    one=V.oneshot_clip_transform(frames, s[1]), one_eval=V.oneshot_clip_transform(frames),
                    pidx=V.pretrain_frame_indices(n, seed=s[2]), eidx=V.episode_frame_indices(n, 8, s[3]),
                    eidx_eval=V.episode_frame_indices(n))

    mapped = list(ds.map(fn).as_numpy_iterator())
    assert len(mapped) == 3
    for frames, seed, got in zip(clips, seeds, mapped):
        want = tf.nest.map_structure(lambda t: t.numpy(), fn(tf.constant(frames), tf.constant(seed)))
        for key in want:
            tf.nest.map_structure(np.testing.assert_array_equal, got[key], want[key])


def test_same_seed_same_output_different_seeds_differ():
    frames = _clip(4, 256, 340)
    outs = [V.pretrain_clip_transform(frames, s).numpy() for s in SEEDS[:6]]
    np.testing.assert_array_equal(outs[0], V.pretrain_clip_transform(frames, SEEDS[0]).numpy())
    assert len({o.tobytes() for o in outs}) > 1
    pidx = {V.pretrain_frame_indices(300, seed=s).numpy().tobytes() for s in SEEDS[:6]}
    eidx = {V.episode_frame_indices(300, 8, s).numpy().tobytes() for s in SEEDS[:6]}
    assert len(pidx) > 1 and len(eidx) > 1
    np.testing.assert_array_equal(V.pretrain_frame_indices(300, seed=SEEDS[3]).numpy(),
                                  V.pretrain_frame_indices(300, seed=SEEDS[3]).numpy())
    np.testing.assert_array_equal(V.episode_frame_indices(300, 8, SEEDS[3]).numpy(),
                                  V.episode_frame_indices(300, 8, SEEDS[3]).numpy())


def test_multiscale_crop_small_frames_clamped_to_frame():
    frames = _clip(2, 222, 300)  # base 222 → size 222 snapped to 224 > 222: clamped to the frame
    for seed in SEEDS[:40]:
        out, p = V.multiscale_crop(frames, seed)
        assert out.shape == (2, 224, 224, 3)
        assert 0 <= int(p["offset_y"]) and int(p["offset_y"]) + int(p["crop_h"]) <= 222
        assert 0 <= int(p["offset_x"]) and int(p["offset_x"]) + int(p["crop_w"]) <= 300
