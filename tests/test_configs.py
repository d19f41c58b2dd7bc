"""Configs: every argument builds, overrides work, bad values fail at start with clear messages."""
import pytest

from mumae_jax.configs import pretrain
from mumae_jax.models import mae


@pytest.mark.parametrize("arg", ["", "variant=S", "variant=Ti", "runlocal", "data=mmact", "modalities=video",
                                 "sensor_masking=independent", "sensor_masking=time_aligned",
                                 "video_masking=random,variant=S"])
def test_every_argument_builds_a_valid_model(arg):
    c = pretrain.get_config(arg)
    model = mae.from_config(c)
    assert [s.name for s in model.specs][0] == "video"


def test_paper_recipe_defaults():
    c = pretrain.get_config()
    assert (c.model.variant, c.batch_size, c.base_lr, c.min_lr, c.weight_decay) == ("B", 64, 1.5e-4, 1e-5, 0.05)
    assert (c.b1, c.b2, c.warmup_epochs, c.model.decoder_depth) == (0.9, 0.95, 40.0, 4)
    m = mae.from_config(c)
    assert (m.width, m.depth, m.num_heads, m.decoder_width, m.decoder_heads) == (768, 12, 12, 384, 6)
    video, *sensors = m.specs
    assert video.num_tokens == 1568 and video.num_visible == 160 and video.mask_type == "tube"
    assert all(s.num_tokens == 16 and s.num_visible == 2 and s.mask_group == "sensors" and s.loss_weight == 0.5
               for s in sensors)
    s = mae.from_config(pretrain.get_config("variant=S"))
    assert (s.width, s.num_heads, s.decoder_width, s.decoder_heads) == (384, 6, 192, 3)


def test_video_only_is_a_configuration():
    m = mae.from_config(pretrain.get_config("modalities=video"))
    assert [s.name for s in m.specs] == ["video"]


def test_unknown_variant_fails():
    with pytest.raises(ValueError, match="unknown model variant 'XL'; known variants: Ti, S, B"):
        pretrain.get_config("variant=XL")
    c = pretrain.get_config()
    c.model.variant = "H"
    with pytest.raises(ValueError, match="unknown model variant 'H'"):
        mae.from_config(c)


def test_unknown_argument_fails():
    with pytest.raises(ValueError, match="unknown config argument 'varient'"):
        pretrain.get_config("varient=S")
    with pytest.raises(ValueError, match="sensor_masking='sync'"):
        pretrain.get_config("sensor_masking=sync")


@pytest.mark.parametrize("ratio", [0.0, 1.0, -0.1, 1.5])
def test_mask_ratio_outside_open_interval_fails(ratio):
    c = pretrain.get_config()
    c.modality.video.mask_ratio = ratio
    with pytest.raises(ValueError, match=r"modality 'video': mask_ratio=.* strictly between 0 and 1"):
        mae.from_config(c)
    c = pretrain.get_config()
    c.modality.gyro.mask_ratio = ratio
    with pytest.raises(ValueError, match="modality 'gyro': mask_ratio"):
        mae.from_config(c)


def test_frames_not_divisible_by_tubelet_fails():
    c = pretrain.get_config()
    c.modality.video.num_frames = 15
    with pytest.raises(ValueError, match="num_frames=15 is not divisible by the tubelet's temporal size 2"):
        mae.from_config(c)
    c = pretrain.get_config()
    c.modality.video.image_size = 200
    with pytest.raises(ValueError, match="image_size=200 is not divisible"):
        mae.from_config(c)


def test_inconsistent_sensor_settings_fail():
    c = pretrain.get_config()
    c.modality.gyro.mask_ratio = 0.5  # same group as the others, different ratio
    with pytest.raises(ValueError, match="shares mask_group='sensors'"):
        mae.from_config(c)
    c = pretrain.get_config("sensor_masking=time_aligned")
    c.modality.gyro.patching = "strided"
    c.modality.gyro.mask_group = ""
    with pytest.raises(ValueError, match="needs patching='contiguous'"):
        mae.from_config(c)
    c = pretrain.get_config()
    c.modality.gyro.length = 100
    with pytest.raises(ValueError, match="length=100 is not divisible by num_tokens=16"):
        mae.from_config(c)
    c = pretrain.get_config()
    c.compute_dtype = "float16"
    with pytest.raises(ValueError, match="compute_dtype"):
        mae.from_config(c)


def test_oneshot_recipes():
    """recipe=measured (default) changes only the runlocal one-shot optimisation; recipe=paper and every
    full-size config keep the official one (SGD over every parameter, official episodes)."""
    from mumae_jax.configs import oneshot

    def recipe(arg):
        c = oneshot.get_config(arg)
        m = c.model
        return (c.optimizer, tuple(c.freeze), c.episodes.protocol, c.lr, c.total_tasks, m.fusion, m.mae_pooling,
                tuple(c.evals.episodes.late_weights), c.init.mae, c.init.video)

    assert recipe("runlocal") == ("adam", ("mae", "video"), "trx", 1e-3, 800, "late", "modality", (),
                                  "pretrained", "random")
    paper = ("sgd", (), "official", 0.05, 320, "mae_query", "mean", (), "pretrained", "mae")
    assert recipe("runlocal,recipe=paper") == paper
    assert recipe("") == recipe("recipe=paper") == ("sgd", (), "official", 0.01, 256020) + paper[5:]
    with pytest.raises(ValueError, match="recipe"):
        oneshot.get_config("runlocal,recipe=fast")


def test_oneshot_num_classes_comes_from_the_class_split():
    from mumae_jax.configs import oneshot
    from mumae_jax.data import splits
    from mumae_jax.trainers import oneshot_training

    c = oneshot.get_config("runlocal")
    assert c.model.num_classes == 0 and oneshot_training.num_classes(c) == 33  # split 3 of the 33 classes
    three = splits.ClassSplit(base=("a", "b"), validation=(), novel=("c",))
    assert oneshot_training.num_classes(c, three) == 3  # another dataset's split: no hand-set number
    c.model.num_classes = 40
    assert oneshot_training.num_classes(c, three) == 40
    c.model.num_classes = 2
    with pytest.raises(ValueError, match="num_classes=2 is smaller than the class split's 3 classes"):
        oneshot_training.num_classes(c, three)


def test_sensor_names_are_a_config_argument():
    from mumae_jax.configs import oneshot

    c = pretrain.get_config("runlocal,sensors=acc+gyro")
    assert c.modalities == ("video", "acc", "gyro") and set(c.modality) == {"video", "acc", "gyro"}
    assert c.modality.gyro.mask_group == "sensors" and c.modality.acc.length == 128
    assert [s.name for s in mae.from_config(c).specs] == ["video", "acc", "gyro"]
    assert oneshot.get_config("runlocal,sensors=acc+gyro").sensors == ("acc", "gyro")
    assert pretrain.get_config("sensors=acc+gyro,modalities=video").modalities == ("video",)
    for bad in ("sensors=acc+acc", "sensors=acc++gyro"):
        with pytest.raises(ValueError, match="distinct names joined by"):
            pretrain.get_config(bad)
