"""Safe state-dict reading, the convert / export commands and `config.model_init` (no transformers)."""
import argparse
import json
import os

import jax
import numpy as np
import pytest
import torch

from mumae_jax.configs import oneshot as oneshot_config
from conftest import make_tiny_config
from mumae_jax.steps import pretraining_step
from mumae_jax.trainers import oneshot_training, pretraining
from mumae_jax.weights import model_init, pretrained
from mumae_jax.models import mae, timesformer
from mumae_jax.weights import convert, export, official_keys, state_dict_io

GEOMETRY = ["--num_heads", "2", "--decoder_heads", "2", "--num_frames", "4", "--image_size", "32"]


@pytest.fixture(scope="module")
def tiny():
    """(config, model, params (numpy), official state dict) of a tiny random Mu-MAE."""
    config = make_tiny_config()
    model = mae.from_config(config)
    inputs, masks = pretraining_step.dummy_inputs(model.specs)
    params = jax.device_get(model.init({"params": jax.random.key(3)}, inputs, masks)["params"])
    # nonzero biases and non-unit norms, so that a wrong mapping cannot go unnoticed
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda x: np.asarray(x + 0.05 * rng.standard_normal(x.shape), np.float32), params)
    return config, model, params, official_keys.to_official(params, model.specs)


def _equal(a, b):
    return all(jax.tree.leaves(jax.tree.map(lambda x, y: np.array_equal(np.asarray(x), np.asarray(y)), a, b)))


# ---------------------------------------------------------------------------------------------------
# Reading files
# ---------------------------------------------------------------------------------------------------

def test_official_training_checkpoint_with_args_is_read(tmp_path, tiny):
    """Official checkpoints hold {'model', 'epoch', 'args': Namespace}; weights_only allows exactly that."""
    sd = tiny[3]
    path = str(tmp_path / "checkpoint-5.pth")
    torch.save({"model": {k: torch.from_numpy(v) for k, v in sd.items()}, "epoch": 5,
                "args": argparse.Namespace(lr=1.5e-4, model="pretrain_videomae_base_patch16_224", num_frames=4,
                                           input_size=32)}, path)
    out, info = state_dict_io.load_state_dict(path)
    assert info["epoch"] == 5 and info["wrapper"] == "model" and list(out) == list(sd)
    assert info["args"] == {"num_frames": 4, "input_size": 32}  # the run's clip geometry
    assert all(np.array_equal(out[k], sd[k]) for k in sd)
    # converted without geometry flags, the saved config takes the run's 4 frames of 32² (not 16 of 224²)
    # and names the preset nearest its 64 width
    assert convert.main(["--src", path, "--dst", str(tmp_path / "out"), "--num_heads", "2", "--decoder_heads", "2"]) == 0
    saved = pretrained.load_config(str(tmp_path / "out"))
    assert (saved.modality.video.num_frames, saved.modality.video.image_size, saved.model.variant) == (4, 32, "Ti")


def test_random_bytes_are_not_a_checkpoint_and_a_taken_dst_is_refused_first(tmp_path, converted):
    path = tmp_path / "noise.pth"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ValueError, match=r"noise\.pth: is not a PyTorch checkpoint \(torch\.load: "):
        state_dict_io.load_state_dict(str(path))
    with pytest.raises(FileExistsError, match="already holds checkpoints"):  # before the source is read
        convert.convert(str(path), converted)


class Payload:
    """Stands for arbitrary code in a pickle."""


def test_foreign_pickle_is_refused_naming_file_and_class(tmp_path):
    path = str(tmp_path / "evil.pth")
    torch.save({"model": {"w": torch.zeros(2)}, "extra": Payload()}, path)
    with pytest.raises(ValueError, match=r"evil\.pth: refused by torch\.load\(weights_only=True\)") as e:
        state_dict_io.load_state_dict(path)
    assert "Payload" in str(e.value)


@pytest.mark.parametrize("ext", [".pth", ".safetensors", ".npz"])
def test_truncated_file_fails_naming_it(tmp_path, tiny, ext):
    path = str(tmp_path / f"model{ext}")
    state_dict_io.save_state_dict(tiny[3], path)
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])
    with pytest.raises(ValueError, match=rf"model{ext}: not a readable .*(truncated|corrupted)"):
        state_dict_io.load_state_dict(path)


def test_foreign_and_malformed_files(tmp_path):
    text = tmp_path / "notes.pth"
    text.write_text("these are not weights\n")
    with pytest.raises(ValueError, match=r"notes\.pth: "):
        state_dict_io.load_state_dict(str(text))
    mixed = str(tmp_path / "mixed.pth")
    torch.save({"w": torch.zeros(2), "step": 3}, mixed)
    with pytest.raises(ValueError, match=r"mixed\.pth: entry 'step' is a int, not a tensor"):
        state_dict_io.load_state_dict(mixed)
    with pytest.raises(ValueError, match=r"model\.ckpt: unknown extension '\.ckpt'"):
        (tmp_path / "model.ckpt").write_bytes(b"x")
        state_dict_io.load_state_dict(str(tmp_path / "model.ckpt"))
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        state_dict_io.load_state_dict(str(tmp_path / "missing.pth"))


def test_npy_and_broken_json_are_named(tmp_path):
    np.save(tmp_path / "one.npy", np.zeros(3))
    os.rename(tmp_path / "one.npy", tmp_path / "one.npz")
    with pytest.raises(ValueError, match=r"one\.npz: is a single \.npy array"):
        state_dict_io.load_state_dict(str(tmp_path / "one.npz"))
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"config\.json: is not valid JSON"):
        state_dict_io.load_state_dict(str(tmp_path / "hf"))


def test_bfloat16_tensors_are_widened(tmp_path):
    path = str(tmp_path / "half.pth")
    torch.save({"w": torch.tensor([1.5, -2.0], dtype=torch.bfloat16)}, path)
    out, _ = state_dict_io.load_state_dict(path)
    assert out["w"].dtype == np.float32 and out["w"].tolist() == [1.5, -2.0]


# ---------------------------------------------------------------------------------------------------
# convert / export
# ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("ext", [".pth", ".safetensors", ".npz"])
def test_convert_official_is_exact_and_export_round_trips(tmp_path, tiny, ext, capsys):
    config, model, params, sd = tiny
    src = str(tmp_path / f"mumae{ext}")
    state_dict_io.save_state_dict(sd, src, wrap_model=True, metadata={"epoch": 7})
    dst = str(tmp_path / "converted")
    assert convert.main(["--src", src, "--dst", dst] + GEOMETRY) == 0
    assert "(official) ->" in capsys.readouterr().out
    report = json.load(open(os.path.join(dst, "conversion_report.json")))
    assert report["format"] == "official" and report["loaded"] == len(sd) and report["encoder_only"] is False
    assert report["missing"] == report["unexpected"] == report["mismatched"] == report["skipped"] == []
    cfg, loaded, step = pretrained.load_params(dst)
    assert step == (7 if ext == ".pth" else 0)
    assert (cfg.model.width, cfg.model.depth, cfg.model.num_heads, cfg.model.decoder_width,
            cfg.model.decoder_depth, tuple(cfg.modality.video.tubelet)) == (64, 2, 2, 32, 1, (2, 16, 16))
    assert _equal(jax.device_get(loaded), params)
    back = str(tmp_path / "back.pth")
    assert export.main(["--src", dst, "--dst", back, "--format", "official"]) == 0
    out, info = state_dict_io.load_state_dict(back)
    assert info["epoch"] == step and list(out) == list(sd)
    assert all(out[k].dtype == sd[k].dtype and np.array_equal(out[k], sd[k]) for k in sd)


def test_convert_renamed_key_fails_naming_it_and_skip_lets_it_through(tmp_path, tiny, capsys):
    sd = dict(tiny[3])
    sd["encoder.blocks.1.mlp.fc3.weight"] = sd.pop("encoder.blocks.1.mlp.fc2.weight")
    src = str(tmp_path / "renamed.safetensors")
    state_dict_io.save_state_dict(sd, src)
    assert convert.main(["--src", src, "--dst", str(tmp_path / "a")] + GEOMETRY) == 2
    err = capsys.readouterr().err
    assert "missing: encoder.blocks.1.mlp.fc2.weight" in err and "unexpected: encoder.blocks.1.mlp.fc3.weight" in err
    assert not os.path.exists(tmp_path / "a" / "checkpoints")
    skip = "encoder.blocks.1.mlp.fc2.weight,encoder.blocks.1.mlp.fc3.weight"
    assert convert.main(["--src", src, "--dst", str(tmp_path / "b"), "--skip", skip] + GEOMETRY) == 0
    report = json.load(open(tmp_path / "b" / "conversion_report.json"))
    assert report["skipped"] == sorted(skip.split(","))


def test_convert_videomae_finetune_checkpoint_is_encoder_only(tmp_path, tiny):
    config, model, params, sd = tiny
    video = {k: v for k, v in sd.items() if k.startswith("encoder.") and "patch_embed_" not in k
             and not k.startswith("encoder.norm")}
    ft = {k[len("encoder."):]: v for k, v in video.items()}
    ft.update({"fc_norm.weight": np.ones(64, np.float32), "fc_norm.bias": np.zeros(64, np.float32),
               "head.weight": np.zeros((10, 64), np.float32), "head.bias": np.zeros(10, np.float32)})
    src = str(tmp_path / "finetuned.pth")
    state_dict_io.save_state_dict(ft, src, wrap_model=True)
    with pytest.raises(ValueError, match=r"unexpected: fc_norm\.weight"):
        convert.convert(src, str(tmp_path / "a"), "auto", (), convert.parser().parse_args(
            ["--src", src, "--dst", "x"] + GEOMETRY))
    dst = str(tmp_path / "b")
    assert convert.main(["--src", src, "--dst", dst, "--skip", "fc_norm.weight,fc_norm.bias,head.weight,head.bias"]
                        + GEOMETRY) == 0
    report = json.load(open(os.path.join(dst, "conversion_report.json")))
    assert report["format"] == "videomae" and report["encoder_only"] is True
    _, loaded, _ = pretrained.load_params(dst)
    loaded = jax.device_get(loaded)
    assert sorted(loaded) == ["embed_video", "encoder"] and "norm" not in loaded["encoder"]
    assert _equal(loaded["embed_video"], params["embed_video"])
    assert _equal(loaded["encoder"]["block01"], params["encoder"]["block01"])


# ---------------------------------------------------------------------------------------------------
# config.model_init
# ---------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def converted(tmp_path_factory, tiny):
    d = tmp_path_factory.mktemp("conv")
    src = str(d / "m.pth")
    state_dict_io.save_state_dict(tiny[3], src, wrap_model=True)
    assert convert.main(["--src", src, "--dst", str(d / "out")] + GEOMETRY) == 0
    return str(d / "out")


def test_pretraining_starts_from_model_init_with_other_geometry(tmp_path, tiny, converted):
    """48² frames instead of the checkpoint's 32² (sin-cos tables rebuilt); lr 0 keeps the weights."""
    c = make_tiny_config(total_steps=1, warmup_steps=1, base_lr=0.0, min_lr=0.0, model_init=converted)
    c.modality.video.image_size = 48
    out = pretraining.train_and_evaluate(c, str(tmp_path))
    assert _equal(jax.device_get(out["state"]["params"]), tiny[2])
    report = json.load(open(tmp_path / "model_init_report.json"))
    assert len(report["loaded"]) == len(jax.tree.leaves(tiny[2])) and report["kept_init"] == []


def test_model_init_is_strict_unless_prefixes_are_named_fresh(tiny):
    params = tiny[2]
    encoder_only = {k: v for k, v in params.items() if k.startswith("embed_") or k == "encoder"}
    with pytest.raises(ValueError, match=r"decoder_video: 17 parameter\(s\) missing") as e:
        model_init.apply(params, encoder_only)
    assert "model_init_fresh=('decoder_acc_phone'," in str(e.value) and "'mask_token')" in str(e.value)
    out, report = model_init.apply(params, encoder_only, ("decoder_", "mask_token", "encoder_to_decoder"))
    assert report["kept_init"] and all(k.split("/")[0].startswith(("decoder_", "mask_token", "encoder_to"))
                                       for k in report["kept_init"])
    bad = dict(params, mask_token=np.zeros((1, 1, 8), np.float32))
    with pytest.raises(ValueError, match=r"mask_token: model_init shape \(1, 1, 8\) != model shape \(1, 1, 32\)"):
        model_init.apply(params, bad)


def test_model_init_refuses_settings_that_shapes_do_not_show(converted):
    """Head count and LayerNorm eps leave no trace in the shapes: they are compared on the configs."""
    source = pretrained.load_config(converted)
    _, params, _ = pretrained.load_params(converted)
    model_init.check_architecture(source, make_tiny_config(), params)  # same settings: fine
    other = make_tiny_config()
    other.model.num_heads = 4
    other.model.layer_norm_eps = 1e-5
    with pytest.raises(ValueError, match=r"num_heads: model_init has 2, this run 4") as e:
        model_init.check_architecture(source, other, params)
    assert "layer_norm_eps: model_init has 1e-06, this run 1e-05" in str(e.value)


def test_oneshot_stage_accepts_a_converted_checkpoint(tiny, converted):
    c = oneshot_config.get_config("runlocal")
    c.model_init = converted
    assert oneshot_training.pretrain_config(c).model.width == 64
    from mumae_jax.evaluators import frozen_features

    _, feats, _ = frozen_features.from_pretrain_run(converted, num_frames=2, image_size=32)
    assert _equal(feats["encoder"], {k: v for k, v in tiny[2]["encoder"].items() if k != "norm"})
    ts = timesformer.TimeSformer(width=64, depth=2, num_heads=2, mlp_dim=128, patch_size=16, num_frames=2,
                                 image_size=32)
    ts_params = ts.init(jax.random.key(0), np.zeros((1, 2, 32, 32, 3), np.float32))["params"]
    _, loaded, _ = pretrained.load_params(converted)
    _, report = timesformer.init_from_mae(ts_params, jax.device_get(loaded))
    assert report["loaded"] and not any("norm" == k for k in report["kept_init"])


# ---------------------------------------------------------------------------------------------------
# Hugging Face folders through the commands
# ---------------------------------------------------------------------------------------------------

HF_SMALL = dict(image_size=32, patch_size=16, num_frames=4, tubelet_size=2, hidden_size=64, num_hidden_layers=2,
                num_attention_heads=2, intermediate_size=128, decoder_hidden_size=32, decoder_num_hidden_layers=1,
                decoder_num_attention_heads=2, decoder_intermediate_size=64, norm_pix_loss=True)


def _hf_model(cls, seed=0, **kw):
    import transformers

    torch.manual_seed(seed)
    model = getattr(transformers, cls)(transformers.VideoMAEConfig(**HF_SMALL, **kw)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape))
    return model


def test_hf_folder_converts_and_exports_back_bit_exactly(tmp_path):
    import transformers

    hf = _hf_model("VideoMAEForPreTraining", use_mean_pooling=False)
    hf.save_pretrained(tmp_path / "hf")
    dst = str(tmp_path / "converted")
    assert convert.main(["--src", str(tmp_path / "hf"), "--dst", dst]) == 0
    cfg = pretrained.load_config(dst)
    assert (cfg.modalities, cfg.model.width, cfg.model.num_heads, cfg.model.decoder_norm_eps) == (
        ["video"], 64, 2, 1e-5)
    assert export.main(["--src", dst, "--dst", str(tmp_path / "back"), "--format", "hf"]) == 0
    back = transformers.VideoMAEForPreTraining.from_pretrained(tmp_path / "back").eval()
    a, b = hf.state_dict(), back.state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert back.config.layer_norm_eps == hf.config.layer_norm_eps and back.config.use_mean_pooling is False


def test_hf_mean_pooling_encoder_converts_without_final_norm(tmp_path):
    hf = _hf_model("VideoMAEModel", use_mean_pooling=True)
    hf.save_pretrained(tmp_path / "hf")
    dst = str(tmp_path / "converted")
    assert convert.main(["--src", str(tmp_path / "hf"), "--dst", dst]) == 0
    report = json.load(open(os.path.join(dst, "conversion_report.json")))
    assert report["format"] == "hf" and report["encoder_only"] is True and report["unexpected"] == []
    _, params, _ = pretrained.load_params(dst)
    assert sorted(params) == ["embed_video", "encoder"] and "norm" not in params["encoder"]
    w = hf.state_dict()["encoder.layer.1.intermediate.dense.weight"].numpy()
    assert np.array_equal(np.asarray(params["encoder"]["block01"]["mlp"]["fc1"]["kernel"]), w.T)
    # and back: a VideoMAEModel without final norm (use_mean_pooling=True) computing the same features
    import transformers

    assert export.main(["--src", dst, "--dst", str(tmp_path / "back"), "--format", "hf"]) == 0
    back = transformers.VideoMAEModel.from_pretrained(tmp_path / "back").eval()
    assert back.config.use_mean_pooling is True and back.layernorm is None
    a, b = hf.state_dict(), back.state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
    x = torch.randn(1, 4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(hf(x).last_hidden_state, back(x).last_hidden_state)
