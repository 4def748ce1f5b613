"""Layout conversion: exact round trips (KV and micro-conditioned too), diffusers interop, sharded and pipeline
folders, config inference from shapes, and convert_checkpoint's no-overwrite / nothing-half-written rules."""

from __future__ import annotations

import json
import os
import stat

import pytest
import torch
from safetensors.torch import load_file, save_file

from pixart.checkpoint import (
    CheckpointError,
    check_state_dict,
    convert_checkpoint,
    load_transformer,
    read_checkpoint,
    save_transformer,
)
from pixart.config import get_preset
from pixart.convert import (
    ConversionError,
    config_from_diffusers,
    config_to_diffusers,
    diffusers_to_ours,
    infer_config,
    official_to_ours,
    ours_to_diffusers,
    ours_to_official,
)
from pixart.model import PixArtSigma
from tests.conftest import randomize, tiny_config
from tests.test_checkpoint import assert_same_weights, no_temp_files, outputs, tiny_model

CONFIGS = {
    "plain": {},
    "kv": {"depth": 3, "kv_compress_layers": (0, 2), "kv_compress_factor": 2, "kv_compress_sampling": "conv"},
    "micro": {"micro_condition": True, "max_tokens": 6, "sample_size": 16},
}


# ---- key maps ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(CONFIGS))
def test_official_ours_diffusers_ours_is_bit_identical(name):
    model = tiny_model(**CONFIGS[name])
    cfg, ours = model.cfg, model.state_dict()
    official = {f"module.{k}": v for k, v in ours_to_official(ours).items()} | {"pos_embed": torch.zeros(1, 16, 48)}
    back = official_to_ours(official)
    assert_same_weights(back, ours)
    diffusers = ours_to_diffusers(back, cfg)
    assert (
        config_from_diffusers(config_to_diffusers(cfg), max_tokens=cfg.max_tokens).replace(
            class_dropout_prob=cfg.class_dropout_prob
        )
        == cfg
    )
    assert_same_weights(diffusers_to_ours(diffusers, cfg), ours)
    if name == "kv":
        assert "transformer_blocks.2.attn1.kv_compress.conv.weight" in diffusers
        assert "transformer_blocks.1.attn1.kv_compress.conv.weight" not in diffusers


@pytest.mark.parametrize("name", list(CONFIGS))
def test_files_round_trip_through_every_layout(tmp_path, name):
    model = tiny_model(**CONFIGS[name])
    save_transformer(model, tmp_path / "ours.safetensors")
    convert_checkpoint(tmp_path / "ours.safetensors", tmp_path / "official.pth", "official")
    convert_checkpoint(tmp_path / "official.pth", tmp_path / "ours2.safetensors", "pixart", config=model.cfg)
    convert_checkpoint(tmp_path / "ours2.safetensors", tmp_path / "diffusers", "diffusers")
    convert_checkpoint(tmp_path / "diffusers", tmp_path / "ours3.safetensors", "pixart")
    final = load_transformer(tmp_path / "ours3.safetensors")
    assert final.cfg == model.cfg
    assert_same_weights(final.state_dict(), model.state_dict())
    assert_same_weights(load_file(tmp_path / "ours3.safetensors"), model.state_dict())
    assert torch.equal(outputs(final), outputs(model))
    assert no_temp_files(tmp_path)


def test_leftover_keys_raise_naming_them():
    model = tiny_model()
    ours = {**model.state_dict(), "blocks.0.attn.extra.weight": torch.zeros(1)}
    with pytest.raises(ConversionError, match=r"blocks\.0\.attn\.extra\.weight"):
        ours_to_diffusers(ours, model.cfg)
    diffusers = {**ours_to_diffusers(model.state_dict(), model.cfg), "transformer_blocks.1.stray": torch.zeros(1)}
    with pytest.raises(ConversionError, match=r"transformer_blocks\.1\.stray"):
        diffusers_to_ours(diffusers, model.cfg)


# ---- config inference ----------------------------------------------------------------------------------------------


# Other widths, patch sizes and channels; one 72-wide head is what a file of unknown width is assumed to have.
OTHER_SHAPES = {
    "hidden_size": 72,
    "num_heads": 1,
    "patch_size": 1,
    "in_channels": 3,
    "learn_sigma": False,
    "caption_channels": 8,
    "max_tokens": 4,
    "mlp_ratio": 2.0,
}


@pytest.mark.parametrize("changes", [*CONFIGS.values(), OTHER_SHAPES], ids=[*CONFIGS, "other_shapes"])
def test_infer_config_from_shapes(changes):
    cfg = tiny_config(**changes)
    with torch.device("meta"):
        sd = PixArtSigma(cfg).state_dict()
    assert infer_config(sd, base=tiny_config(sample_size=cfg.sample_size)) == cfg


def test_full_width_released_file_infers_the_preset(tmp_path):
    """The one full-width test: 1152 wide, depth 1, named like a released file (heads and PE from the name).

    Every tensor is a stride-0 view of one scalar, so the file is tiny: only shapes matter here.
    """
    preset = get_preset("PixArt-Sigma-XL-2-2K-MS-KV").replace(depth=1, kv_compress_layers=(0,))
    with torch.device("meta"):
        shapes = PixArtSigma(preset).state_dict()
    one = torch.zeros(())
    sd = {k: one.expand(v.shape) for k, v in shapes.items()}
    torch.save({"state_dict": sd}, tmp_path / "PixArt-Sigma-XL-2-2K-MS-KV.pth")
    cfg, loaded, info = read_checkpoint(tmp_path / "PixArt-Sigma-XL-2-2K-MS-KV.pth")
    assert cfg == preset and info.config_source.endswith("(from the file name)")
    assert {k: v.shape for k, v in loaded.items()} == {k: v.shape for k, v in shapes.items()}
    check_state_dict(loaded, shapes, "full width")


# ---- diffusers folders ---------------------------------------------------------------------------------------------


def test_our_diffusers_folder_loads_in_diffusers_with_same_output(tmp_path):
    from diffusers import PixArtTransformer2DModel

    model = tiny_model()
    convert_checkpoint(save_transformer(model, tmp_path / "m.safetensors"), tmp_path / "d", "diffusers")
    ref = PixArtTransformer2DModel.from_pretrained(tmp_path / "d").eval()
    gen = torch.Generator().manual_seed(0)
    x, caption = torch.randn(2, 4, 8, 12, generator=gen), torch.randn(2, 5, 16, generator=gen)
    t, mask = torch.tensor([3.0, 700.0]), torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]])
    with torch.no_grad():
        ours = model(x, t, caption, mask)
        theirs = ref(
            x,
            encoder_hidden_states=caption,
            encoder_attention_mask=mask,
            timestep=t,
            added_cond_kwargs={"resolution": None, "aspect_ratio": None},
            return_dict=False,
        )[0]
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def test_kv_diffusers_folder_carries_extra_keys_and_config(tmp_path):
    model = tiny_model(**CONFIGS["kv"])
    convert_checkpoint(save_transformer(model, tmp_path / "m.safetensors"), tmp_path / "d", "diffusers")
    config = json.loads((tmp_path / "d" / "config.json").read_text())
    assert config["kv_compress_layers"] == [0, 2] and config["kv_compress_factor"] == 2
    keys = load_file(tmp_path / "d" / "diffusion_pytorch_model.safetensors")
    assert {"caption_projection.y_embedding", "transformer_blocks.0.attn1.kv_compress.norm.bias"} <= set(keys)
    assert_same_weights(load_transformer(tmp_path / "d").state_dict(), model.state_dict())


def test_shape_only_read_of_a_diffusers_folder_matches_the_real_read(tmp_path):
    """`meta=True` (what `pixart generate` reads first) joins the split q/k/v and MLP rows without torch.cat."""
    model = tiny_model(**CONFIGS["kv"]).half()
    convert_checkpoint(save_transformer(model, tmp_path / "m.safetensors"), tmp_path / "d", "diffusers")
    cfg, real, _ = read_checkpoint(tmp_path / "d")
    meta_cfg, meta, _ = read_checkpoint(tmp_path / "d", meta=True)
    assert meta_cfg == cfg and all(t.is_meta for t in meta.values())
    assert {k: (v.shape, v.dtype) for k, v in meta.items()} == {k: (v.shape, v.dtype) for k, v in real.items()}


def test_v_prediction_survives_every_writable_layout_but_official(tmp_path):
    model = tiny_model(prediction="v")
    src = save_transformer(model, tmp_path / "m.safetensors")
    assert load_transformer(src).cfg.prediction == "v"
    convert_checkpoint(src, tmp_path / "d", "diffusers")
    config = json.loads((tmp_path / "d" / "config.json").read_text())
    assert config["prediction_type"] == "v_prediction"
    assert load_transformer(tmp_path / "d").cfg.prediction == "v"
    # An ε model's folder stays byte-for-byte what diffusers writes: no extra key.
    convert_checkpoint(save_transformer(tiny_model(), tmp_path / "e.safetensors"), tmp_path / "de", "diffusers")
    assert "prediction_type" not in json.loads((tmp_path / "de" / "config.json").read_text())
    config["prediction_type"] = "sample"
    (tmp_path / "d" / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="prediction_type='sample': allowed are epsilon, v_prediction"):
        load_transformer(tmp_path / "d")


def _diffusers_folder(folder, model, weights_name="diffusion_pytorch_model.safetensors"):
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config_to_diffusers(model.cfg)))
    sd = ours_to_diffusers(model.state_dict(), model.cfg)
    del sd["caption_projection.y_embedding"]  # as in diffusers' own files
    if weights_name:
        save_file(sd, folder / weights_name)
    return sd


def test_sharded_pipeline_and_variant_folders(tmp_path):
    model = tiny_model(max_tokens=300)  # diffusers files carry no caption length: 300 is the Sigma default
    expected = {k: v for k, v in model.state_dict().items() if k != "y_embedder.y_embedding"}

    def check(path, detail):
        loaded = load_transformer(path)
        _, _, info = read_checkpoint(path)
        assert detail in info.detail and info.format == "diffusers"
        got = {k: v for k, v in loaded.state_dict().items() if k != "y_embedder.y_embedding"}
        assert_same_weights(got, expected)
        assert loaded.cfg.max_tokens == 300

    # Two shards and an index written by hand.
    sd = _diffusers_folder(tmp_path / "sharded", model, weights_name=None)
    keys = sorted(sd)
    shards = {
        "diffusion_pytorch_model-00001-of-00002.safetensors": keys[::2],
        "diffusion_pytorch_model-00002-of-00002.safetensors": keys[1::2],
    }
    for shard, names in shards.items():
        save_file({k: sd[k] for k in names}, tmp_path / "sharded" / shard)
    index = {"metadata": {}, "weight_map": {k: shard for shard, names in shards.items() for k in names}}
    (tmp_path / "sharded" / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps(index))
    check(tmp_path / "sharded", "sharded")

    # A whole pipeline folder: its transformer/ is used.
    _diffusers_folder(tmp_path / "pipe" / "transformer", model)
    (tmp_path / "pipe" / "model_index.json").write_text("{}")
    check(tmp_path / "pipe", "pipeline folder")

    # fp16 variant and .bin weights.
    _diffusers_folder(tmp_path / "fp16", model, "diffusion_pytorch_model.fp16.safetensors")
    check(tmp_path / "fp16", "fp16 variant")
    torch.save(sd, tmp_path / "bin.bin")
    _diffusers_folder(tmp_path / "bin", model, weights_name=None)
    os.replace(tmp_path / "bin.bin", tmp_path / "bin" / "diffusion_pytorch_model.bin")
    check(tmp_path / "bin", "bin")

    # A missing shard is named.
    (tmp_path / "sharded" / "diffusion_pytorch_model-00002-of-00002.safetensors").unlink()
    with pytest.raises(CheckpointError, match="00002-of-00002.*missing"):
        load_transformer(tmp_path / "sharded")
    # config.json but no weights.
    _diffusers_folder(tmp_path / "empty", model, weights_name=None)
    with pytest.raises(CheckpointError, match="no diffusion_pytorch_model weights"):
        load_transformer(tmp_path / "empty")


def test_diffusers_config_mismatching_the_weights(tmp_path):
    model = tiny_model()
    _diffusers_folder(tmp_path / "d", model)
    config = json.loads((tmp_path / "d" / "config.json").read_text())
    (tmp_path / "d" / "config.json").write_text(json.dumps({**config, "num_layers": 3}))
    with pytest.raises(CheckpointError, match="transformer_blocks.2"):
        load_transformer(tmp_path / "d")
    (tmp_path / "d" / "config.json").write_text(json.dumps({**config, "_class_name": "AutoencoderKL"}))
    with pytest.raises(CheckpointError, match="AutoencoderKL"):
        load_transformer(tmp_path / "d")


# ---- convert_checkpoint: destinations ------------------------------------------------------------------------------


def test_convert_refuses_to_overwrite_and_writes_nothing_on_failure(tmp_path):
    src = save_transformer(tiny_model(0), tmp_path / "src.safetensors")
    (tmp_path / "dst.pth").write_bytes(b"keep me")
    with pytest.raises(FileExistsError, match="--force"):
        convert_checkpoint(src, tmp_path / "dst.pth", "official")
    assert (tmp_path / "dst.pth").read_bytes() == b"keep me"
    convert_checkpoint(src, tmp_path / "dst.pth", "official", overwrite=True)
    assert_same_weights(torch.load(tmp_path / "dst.pth", weights_only=True)["state_dict"], tiny_model(0).state_dict())

    # An existing diffusers folder is replaced whole.
    convert_checkpoint(src, tmp_path / "d", "diffusers")
    (tmp_path / "d" / "stale.txt").write_text("old")
    with pytest.raises(FileExistsError):
        convert_checkpoint(src, tmp_path / "d", "diffusers")
    convert_checkpoint(src, tmp_path / "d", "diffusers", overwrite=True)
    assert sorted(os.listdir(tmp_path / "d")) == ["config.json", "diffusion_pytorch_model.safetensors"]
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o777 & ~umask  # not mkdtemp's private 0o700
    assert stat.S_IMODE((tmp_path / "dst.pth").stat().st_mode) == 0o666 & ~umask

    # --force never deletes a folder that is not a model folder, nor swaps files and folders.
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "cat.jpg").write_bytes(b"meow")
    with pytest.raises(FileExistsError, match="not a model folder"):
        convert_checkpoint(src, tmp_path / "photos", "diffusers", overwrite=True)
    (tmp_path / "dir.pth").mkdir()
    with pytest.raises(FileExistsError, match="is a folder"):
        convert_checkpoint(src, tmp_path / "dir.pth", "official", overwrite=True)
    assert (tmp_path / "photos" / "cat.jpg").exists() and (tmp_path / "dir.pth").is_dir()

    # A corrupt source: nothing appears.
    (tmp_path / "bad.safetensors").write_bytes(src.read_bytes()[:100])
    with pytest.raises(CheckpointError):
        convert_checkpoint(tmp_path / "bad.safetensors", tmp_path / "out.safetensors", "pixart")
    assert not (tmp_path / "out.safetensors").exists() and no_temp_files(tmp_path)

    for dst, to in [("x.pth", "pixart"), ("x.bin", "official"), ("x.safetensors", "diffusers"), ("x", "onnx")]:
        with pytest.raises(ValueError):
            convert_checkpoint(src, tmp_path / dst, to)


def test_convert_casts_dtype_and_official_safetensors(tmp_path):
    model = tiny_model()
    src = save_transformer(model, tmp_path / "m.safetensors")
    convert_checkpoint(src, tmp_path / "half.safetensors", "official", dtype=torch.float16)
    sd = load_file(tmp_path / "half.safetensors")
    assert {t.dtype for t in sd.values()} == {torch.float16}
    assert_same_weights(sd, {k: v.half() for k, v in model.state_dict().items()})


def test_randomize_is_deterministic():
    """The round trips above compare against a model rebuilt from the same seed."""
    assert_same_weights(randomize(PixArtSigma(tiny_config()), 3).state_dict(), tiny_model(3).state_dict())
