"""The paper's ablations as one table: `python main.py --config=configs/ablations.py:runlocal --workdir=DIR`
(or `python -m mumae_jax.bench.ablations --config configs/ablations.py:runlocal --workdir DIR`).

Every row is a complete config built here from configs/pretrain.py and configs/oneshot.py, so the same
command runs at the CPU geometry (runlocal) and, with other arguments, at the paper's (ViT-B, 224², MMAct):

  pretraining conditions   random init | VideoMAE (video only) | Mu-MAE synchronized / independent /
                           time-aligned sensor masking; each evaluated by frozen probes (prototype, ridge)
                           per modality group (all, video, sensors) and pooling (official mean, per-modality)
  one-shot rows            the one-shot stage from random init and from Mu-MAE synchronized, with the MAE-query
                           cross-attention (the paper), plain concatenation, or late fusion (the frozen MAE
                           feature's prototype scores added at evaluation); final and validation-selected
  anchors                  the raw inputs themselves (no encoder), the floor every learned row must beat

Arguments (`--config=configs/ablations.py:runlocal,data=mmact`):
  runlocal                 Ti, 8×64² video, CPU-sized schedules (the default on a CPU: see the README's table)
  data=synthetic|mmact     embedded synthetic data (default) or prepared MMAct (set --config.data_dir)
  variant=Ti|S|B           encoder size (default: Ti with runlocal, B otherwise)
  recipe=measured|paper    the one-shot stage's recipe (configs/oneshot.py; differs only with runlocal)
Overrides: `--config.pretrain_steps=3000`, `--config.rows=random,sync,oneshot_sync`, ...
"""
import ml_collections as mlc

from mumae_jax.configs import common, oneshot, pretrain

# pretraining conditions: configs/pretrain.py arguments (None: no pretraining, random weights)
CONDITIONS = {
    "random": ("random init", None),
    "videomae": ("VideoMAE (video only)", "modalities=video"),
    "sync": ("Mu-MAE, synchronized masking", "sensor_masking=synchronized"),
    "independent": ("Mu-MAE, independent masking", "sensor_masking=independent"),
    "time_aligned": ("Mu-MAE, time-aligned masking", "sensor_masking=time_aligned"),
}
# one-shot rows: (label, pretraining condition that initialises the MAE encoder, fusion, pooling of the MAE
# representation: the official mean, or per modality for 'late', not in the paper; TimeSformer initialisation
# for a pretrained condition: 'mae' (from its encoder) or 'random', as configs/oneshot.py's recipe=measured)
ONESHOT = {
    "oneshot_random": ("one-shot stage, random init", "random", "mae_query", "mean", "random"),
    "oneshot_random_concat": ("one-shot stage, random init, plain concatenation", "random", "concat", "mean",
                              "random"),
    "oneshot_random_late": ("one-shot stage, random init, late fusion", "random", "late", "modality", "random"),
    "oneshot_sync": ("one-shot stage from Mu-MAE sync, MAE-query cross-attention", "sync", "mae_query", "mean",
                     "mae"),
    "oneshot_sync_concat": ("one-shot stage from Mu-MAE sync, plain concatenation", "sync", "concat", "mean",
                            "mae"),
    "oneshot_sync_late": ("one-shot stage from Mu-MAE sync, late fusion, random TimeSformer", "sync", "late",
                          "modality", "random"),
}

def get_config(arg=None):
    arg = common.parse_arg(arg, runlocal=False, data="synthetic", variant="", recipe="measured")
    common.choice("data", arg.data, ("synthetic", "mmact"))
    base = ",".join(x for x in ("runlocal" if arg.runlocal else "", f"data={arg.data}",
                                f"variant={arg.variant}" if arg.variant else "") if x)

    c = mlc.ConfigDict()
    c.trainer = "ablations"
    c.seed = 0
    c.rows = ",".join(list(CONDITIONS) + list(ONESHOT))  # which rows to run (comma-separated names)
    c.data_dir = ""  # MMAct: the prepare command's --out (copied into every row's data config)

    # fixed novel-class episode list shared by every row: trx protocol, `queries` per episode
    c.episodes = dict(num_episodes=2000, queries=5, seed=0)
    c.frozen = dict(groups="all,video,sensors", poolings="modality,mean", probes="prototype,ridge")

    c.pretrain_steps = -1  # > 0: every pretraining condition runs this many steps (warm-up 5 %)
    c.conditions = {}
    for name, (label, args) in CONDITIONS.items():
        p = pretrain.get_config(",".join(x for x in (base, args) if x)) if args else pretrain.get_config(base)
        p.evals.fewshot.every_steps = 0
        p.progress_bar = False
        c.conditions[name] = dict(label=label, pretrain=args is not None, config=p)

    o = oneshot.get_config(",".join(x for x in ("runlocal" if arg.runlocal else "", f"data={arg.data}",
                                                f"recipe={arg.recipe}") if x))
    o.progress_bar = False
    o.evals.episodes.report_test_selection = False
    c.oneshot = o
    c.oneshot_rows = {name: dict(label=label, init=init, fusion=fusion, mae_pooling=pooling, video_init=video)
                      for name, (label, init, fusion, pooling, video) in ONESHOT.items()}

    if arg.runlocal:
        # a CPU budget (2 cores: 74 min for every row in one invocation, measured 2026-12-07; docs/transfer.md
        # has the per-row seconds and what each choice measured): 2,000 pretraining steps per condition; the
        # one-shot stage's runlocal recipe=measured (Adam on the sensor CNNs, fusion and CAM over the frozen MAE
        # encoder and TimeSformer, 100 updates of 8 trx episodes with one query per class, as the test list)
        c.pretrain_steps = 2000
    return c
