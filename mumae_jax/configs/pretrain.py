"""Mu-MAE pretraining (multimodal masked autoencoder on video + four wearable sensors).

Defaults follow the official recipe (docs/official_code.md §2.8): ViT-B encoder, four 384-wide decoders of depth 4,
16 frames of 224² in 2×16×16 tubes (1568 tokens, tube masking 0.9 → 160 visible), four 128-sample
sensor streams in 16 strided tokens (synchronized masking 0.9 → 2 visible each), loss
video + 0.5·Σ sensors, AdamW (0.9, 0.95), wd 0.05 (not on biases, 1-D params, mask_token),
lr 1.5e-4·batch/256 warmed up from 0 over 40 epochs then cosine to 1e-5·batch/256, batch 64, 800 epochs.

Arguments (`--config=configs/pretrain.py:variant=S,runlocal`):
  variant=Ti|S|B           model size (default B, as pretrain.sh; Ti with runlocal).
  data=synthetic|mmact     embedded synthetic MMAct-like data (default) or prepared MMAct.
  modalities=all|video     Mu-MAE (video + 4 sensors) or video-only VideoMAE.
  sensors=a+b+...          the sensor streams (default MMAct's acc_phone+acc_watch+gyro+orientation), e.g.
                           sensors=acc+gyro for your own data prepared with --sensors acc,gyro; each gets the
                           default sensor modality (`--config.modality.<name>.<field>=...` changes one).
  sensor_masking=synchronized|independent|time_aligned
                           one mask for all sensors (paper), one per sensor (ablation), or one mask
                           aligned in time with the video mask (contiguous sensor tokens).
  video_masking=tube|random
  runlocal                 Ti, 8×64² video, batch 16, 300 steps: a CPU demo of a few minutes.
  tiny                     runlocal shrunk for tests and the fault suite (`python -m mumae_jax.faults`):
                           a 2-layer 64-wide ViT on 4×32² video, batch 8, 6 steps, 2 subjects × 1 session,
                           no probes, no progress bar, no TensorBoard; seconds per run.

Commands and what to expect:
  python main.py --config=configs/pretrain.py:runlocal --workdir=/tmp/mumae_local
    2-core CPU: ~3 min (2 min 44 s on 2026-12-07, probes included; README results table). The logged
    loss (video + 0.5·Σ sensors, mean of 10 steps) falls from ~4.7 at step 10 to ~2.85 at step 300 (video
    ~0.96; a prediction of each patch's mean scores ~1.0). 300 steps are a demo: the frozen features beat the
    raw inputs after 6,000 steps on these data (docs/transfer.md). Checkpoints at steps 200 and 300,
    metrics.jsonl, tensorboard/. Frozen-encoder few-shot probes on 200 validation episodes at steps 100, 200,
    300 (`fewshot/*` metrics, ~15-20 s each; `--config.evals.fewshot.every_steps=0` turns them off).
  python main.py --config=configs/pretrain.py --config.batch_size=2 --config.total_steps=2 --workdir=...
    paper ViT-B shapes (122.7M parameters) on the synthetic data: ~1.5 min on a 2-core CPU, mostly
    compilation; the lr stays in warm-up (a warning says so).
Any field can be overridden, e.g. `--config.total_steps=1000 --config.modality.video.mask_ratio=0.75`.
Durations: `total_steps`/`warmup_steps` win over `total_epochs`/`warmup_epochs` when positive.
"""
import ml_collections as mlc

from mumae_jax.configs import common
from mumae_jax.models import variants

SENSORS = ("acc_phone", "acc_watch", "gyro", "orientation")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def get_config(arg=None):
    arg = common.parse_arg(arg, variant="", runlocal=False, tiny=False, data="synthetic", modalities="all",
                           sensor_masking="synchronized", video_masking="tube", sensors="+".join(SENSORS))
    sensors = common.name_list("sensors", arg.sensors)
    arg.runlocal = arg.runlocal or arg.tiny
    arg.variant = variants.check_variant(arg.variant or ("Ti" if arg.runlocal else "B"))
    common.choice("data", arg.data, ("synthetic", "mmact"))
    common.choice("modalities", arg.modalities, ("all", "video"))
    common.choice("sensor_masking", arg.sensor_masking, ("synchronized", "independent", "time_aligned"))
    common.choice("video_masking", arg.video_masking, ("tube", "random"))

    c = mlc.ConfigDict()
    c.trainer = "pretrain"
    c.seed = 0

    # ---- optimisation (docs/official_code.md §2.8) ----
    c.batch_size = 64  # global batch: 32 per GPU × 2 GPUs in the official run
    c.base_lr = 1.5e-4
    c.min_lr = 1e-5
    c.lr_scaling_batch = 256  # lr = base_lr · batch_size / lr_scaling_batch (also for min_lr)
    c.total_epochs = 800.0
    c.total_steps = -1  # > 0 wins over total_epochs
    c.warmup_epochs = 40.0
    c.warmup_steps = -1  # > 0 wins over warmup_epochs
    c.weight_decay = 0.05
    c.b1, c.b2, c.eps = 0.9, 0.95, 1e-8
    c.grad_clip_norm = 0.0  # 0: no clipping (official)
    c.compute_dtype = "float32"  # or 'bfloat16' (parameters stay float32)

    # ---- logging and checkpoints ----
    c.log_every_steps = 50
    c.checkpoint_every_steps = 1000
    c.keep_checkpoints = 3
    c.write_tensorboard = True
    c.progress_bar = True

    # ---- model ----
    c.model = dict(variant=arg.variant, width=0, depth=0, num_heads=0, mlp_dim=0, decoder_width=0,
                   decoder_depth=4, decoder_heads=0, decoder_mlp_dim=0, drop_path=0.0,
                   attention_impl="", layer_norm_eps=1e-6, decoder_norm_eps=0.0, remat="none",
                   scan=False)
    # Speed/memory switches (measured in docs/performance.md, `python -m mumae_jax.bench`):
    # compute_dtype='bfloat16' (fp32 master weights), model.attention_impl='cudnn' (flash attention on
    # GPU), model.remat='block'|'dots' (recompute activations in the backward pass), model.scan=True (one
    # scanned block per Transformer, parameters stacked under `layers`), input.device_prefetch.
    # decoder_norm_eps=0: same as layer_norm_eps (official); converted Hugging Face models set both.

    # ---- initialisation ----
    # model_init: start from the parameters of a pretraining workdir or of a converted checkpoint
    # (`python -m mumae_jax.weights.convert`); only at step 0 (a resumed run restores its own checkpoint).
    # Every parameter must be present with its shape; model_init_fresh names path prefixes that may
    # stay freshly initialised instead (e.g. ('decoder_', 'mask_token', 'encoder_to_decoder') for an
    # encoder-only checkpoint). Position tables are fixed sin-cos, rebuilt for this config's geometry.
    c.model_init = ""
    c.model_init_step = -1
    c.model_init_fresh = ()
    c.modalities = ("video",) + (sensors if arg.modalities == "all" else ())
    sensor = dict(kind="sensor", length=128, channels=3, num_tokens=16, patching="strided",
                  mask_type="random", mask_ratio=0.9, mask_group="sensors", align_to="",
                  loss_weight=0.5, normalize_target=True)
    if arg.sensor_masking == "independent":
        sensor["mask_group"] = ""
    elif arg.sensor_masking == "time_aligned":
        sensor.update(patching="contiguous", mask_type="time_aligned", align_to="video")
    c.modality = {
        "video": dict(kind="video", num_frames=16, image_size=224, channels=3, tubelet=(2, 16, 16),
                      mask_type=arg.video_masking, mask_ratio=0.9, loss_weight=1.0, normalize_target=True,
                      input_mean=IMAGENET_MEAN, input_std=IMAGENET_STD, decoder_ratio=1.0),
        # decoder_ratio < 1: the decoder reconstructs only that fraction of the masked tubes, drawn at
        # random (VideoMAE V2's decoder masking; a speed option, not in Mu-MAE; see README performance).
        **{name: dict(sensor) for name in sensors},
    }

    # ---- data ----
    c.input = dict(frame_stride=2, prefetch=2, device_prefetch=2)  # device_prefetch: batches moved to devices ahead
    if arg.data == "synthetic":
        # framing: 'person' (a person-centred crop of each camera, default) or 'room' (the whole view);
        # frame_cache_mb: rendered frames kept in memory (each is rendered once per run, not once per epoch)
        # pretrain_train / pretrain_val: a hashed 80/20 (val_fraction) split of the base classes of the
        # class split (class_split_file, else Mu-MAE split 3 with 5 validation classes), which leaves the
        # one-shot validation classes out unless include_validation_classes (the MMAct rule too).
        c.data = dict(name="synthetic", split="pretrain_train", num_subjects=8, num_sessions=2,
                      num_cameras=4, seed=0, framing="person", frame_cache_mb=2048, shuffle=True,
                      repeated_sampling=1, class_split_file="", val_fraction=0.2,
                      include_validation_classes=False)
    else:
        # dir: the prepare command's --out; the TFDS dataset is built under dir/tfds on first use.
        # val_fraction / include_validation_classes: the pretraining split as for the synthetic data (a value
        # other than the default builds a derived TFDS config beside the default one).
        c.data = dict(name="mmact", split="pretrain_train", dir="", tfds_dir="", split_config="mumae_split3",
                      class_split_file="", shuffle=True, repeated_sampling=1, val_fraction=0.2,
                      include_validation_classes=False)
    # repeated_sampling=k: k consecutive examples are different samples (start, crop) of one clip.
    # augmentation of the pretraining input (mumae_jax/data/input_pipeline.py, augment_options):
    # video_crop 'multiscale' is the official GroupMultiScaleCrop (always on for MMAct; synthetic clips
    # are rendered as they are with 'none'); sensor_time_crop < 1 keeps a random window of each recording;
    # sensor_rotation_deg > 0 rotates the axes of rotate_sensors (a device worn at another angle).
    c.augment = dict(video_crop="none" if arg.data == "synthetic" else "multiscale", sensor_time_crop=1.0,
                     sensor_rotation_deg=0.0, rotate_sensors=("acc_phone", "acc_watch", "gyro"))

    # ---- periodic evaluators: config.evals.<name> = dict(type=..., every_steps=N, ...) ----
    # (mumae_jax/evaluators/common.py; every_steps=0: off; when on, also at the last step)
    # fewshot: frozen-encoder few-shot probes on the current params (mumae_jax/evaluators/frozen.py) over a
    # fixed list of `num_episodes` 5-way 1-shot episodes of the `part` classes (drawn once, `seed`);
    # num_frames=0: the pretraining num_frames (must be a multiple of the tubelet's 2 frames).
    # modalities: comma-separated groups, one encoder each (all, video, sensors, names joined by '+');
    # metrics fewshot/<probe>_* for 'all', fewshot/<group>/<probe>_* for the others. pooling: mean (official)
    # or modality; feature_depth: 0 = every block, k = the first k blocks; queries per episode (0: one per
    # class drawn from; protocol official or trx).
    # pictures: reconstruction pictures of clip `example` of the data order (the same clip each time) in
    # <workdir>/pictures (needs the viz extra; older name: pictures_every_steps)
    c.evals = dict(fewshot=dict(type="fewshot", every_steps=0, part="validation", num_episodes=200, seed=0,
                                probes=("prototype", "ridge"), num_frames=0, batch_size=32, modalities="all",
                                pooling="mean", feature_depth=0, protocol="official", queries=0),
                   pictures=dict(type="pictures", every_steps=0, example=0))

    if arg.runlocal:
        c.modality.video.num_frames = 8
        c.modality.video.image_size = 64
        c.batch_size = 16
        c.base_lr = 1.6e-2  # × 16/256 = 1e-3 peak: a tiny model learns in a few hundred steps
        c.min_lr = 1.6e-4
        c.total_steps = 300
        c.warmup_steps = 30
        c.log_every_steps = 10
        c.checkpoint_every_steps = 100
        c.keep_checkpoints = 2
        c.evals.fewshot.every_steps = 100  # ~15-20 s each on a 2-core CPU (312 validation clips)
    if arg.tiny:
        c.model.update(width=64, depth=2, num_heads=2, mlp_dim=128, decoder_width=32, decoder_depth=1,
                       decoder_heads=2)
        c.modality.video.update(num_frames=4, image_size=32)
        c.batch_size = 8
        c.total_steps = 6
        c.warmup_steps = 2
        c.log_every_steps = 1
        c.checkpoint_every_steps = 2
        c.write_tensorboard = False
        c.progress_bar = False
        c.evals.fewshot.every_steps = 0
        if arg.data == "synthetic":
            c.data.num_subjects = 2
            c.data.num_sessions = 1
    return c
