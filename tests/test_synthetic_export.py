"""The synthetic clips written as an MMAct release tree read back as they were generated."""
import numpy as np
import pytest

from mumae_jax.data import mmact_layout as L
from mumae_jax.data import synthetic as S
from mumae_jax.data import synthetic_export as X

av = pytest.importorskip("av")


def test_release_tree_reads_back_as_generated(tmp_path):
    names = X.write_release_tree(tmp_path, ["kicking"], num_subjects=1, num_cameras=2, size=(32, 48), fps=10)
    data = S.SyntheticMMAct(seed=0, num_subjects=1, num_sessions=1, num_cameras=2, fps=10)
    clips = data.clips(["kicking"])
    assert names == [c.name for c in clips] and len(names) == 2
    videos, _ = L.scan_videos(tmp_path / "video")
    assert len(videos) == 2
    clip = clips[0]
    with av.open(str(tmp_path / "video" / f"subject1/cam{clip.camera}/scene{clip.scene}/session1/kicking.mp4")) as c:
        frames = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
    expected = data.render(clip, np.arange(data.num_frames(clip)), size=(32, 48))
    assert frames.shape == expected.shape
    assert np.abs(frames.astype(int) - expected).mean() < 6  # lossy codec, same pictures
    other = data.render(clips[1], np.arange(data.num_frames(clip)), size=(32, 48))  # the other camera
    assert np.abs(frames.astype(int) - other).mean() > 2 * np.abs(frames.astype(int) - expected).mean()
    for sensor, (ts, vals) in data.sensors(clip).items():
        got_ts, got = L.read_sensor_csv(tmp_path / f"{sensor}_clip/subject1/scene{clip.scene}/session1/kicking.csv")
        np.testing.assert_allclose(got, vals, atol=1e-6)
        np.testing.assert_allclose(got_ts - got_ts[0], (ts - ts[0]) * 1000, atol=2e-3)  # milliseconds, 3 decimals


def test_bad_arguments_are_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown or no classes"):
        X.write_release_tree(tmp_path, ["dancing"])
    with pytest.raises(ValueError, match="even"):
        X.write_release_tree(tmp_path, ["kicking"], size=(33, 48))
    assert X.main(["--out", str(tmp_path), "--classes", "dancing"]) == 2
