"""Training configs: TOML/YAML files, --set overrides, and clear errors before anything starts."""

from __future__ import annotations

import pytest

from pixart.train.config import apply_overrides, load_train_config


def test_toml_and_overrides(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('max_steps = 5\nbatch_size = 4\n[data]\ncache = "c"\n[optim]\nlr = 1\n[model.config]\ndepth = 2\n')
    cfg = load_train_config(f, ["optim.lr=2e-4", "model.kv_compress_layers=[1, 2]", 'validation.prompts=["a"]'])
    assert cfg.max_steps == 5 and cfg.batch_size == 4 and cfg.data.cache == "c"
    assert cfg.optim.lr == 2e-4 and isinstance(cfg.optim.lr, float)
    assert cfg.model.config == {"depth": 2} and cfg.model.kv_compress_layers == [1, 2]
    assert cfg.validation.prompts == ["a"]


def test_yaml(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("seed: 3\ndata:\n  path: imgs\n  resolution: 256\n")
    cfg = load_train_config(f)
    assert cfg.seed == 3 and cfg.data.path == "imgs" and cfg.data.resolution == 256


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["optim.lrr=1"], "unknown config key 'optim.lrr'"),
        (["max_steps=ten"], "max_steps='ten': expected int, got str"),
        (["batch_size=0"], "batch_size=0: must be >= 1"),
        (["data.num_workers=-1"], "data.num_workers=-1: must be >= 0"),
        (["optim.name=sgd"], "optim.name='sgd': allowed are adamw, came"),
        (["data.path=x"], "set exactly one of data.cache"),
        (["mixed_precision=fp8"], "mixed_precision='fp8'"),
        (["optim=3"], "optim: expected a section"),
        (["lr"], "expected key=value"),
        (["batch_size=6", "grad_accum=4"], "batch_size=6 must be divisible by grad_accum=4"),
        (['data.mix=["b", "c"]', "data.mix_repeats=[2]"], "needs one count per data.mix cache"),
        (['data.mix=["b"]', "data.mix_repeats=[0]"], "every count must be >= 1"),
        (["data.cache=", "data.path=x", 'data.mix=["b"]'], "data.mix needs data.cache"),
    ],
)
def test_bad_configs_fail_with_the_key(overrides, message):
    with pytest.raises(ValueError, match=message):
        load_train_config(None, ["data.cache=c", *overrides])


def test_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.toml"):
        load_train_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("max_steps = = 3")
    with pytest.raises(ValueError, match="invalid TOML"):
        load_train_config(bad)
    other = tmp_path / "c.json"
    other.write_text("{}")
    with pytest.raises(ValueError, match="unknown format"):
        load_train_config(other)


def test_overrides_do_not_mutate_input():
    data = {"optim": {"lr": 1.0}}
    out = apply_overrides(data, ["optim.lr=2"])
    assert data["optim"]["lr"] == 1.0 and out["optim"]["lr"] == 2


@pytest.mark.parametrize(
    "name",
    [
        "finetune.toml",
        "lora.toml",
        "stages/1-vae-adaptation.toml",
        "stages/2-resolution-up.toml",
        "stages/3-kv-compression.toml",
    ],
)
def test_shipped_configs_are_valid(name):
    from pathlib import Path

    cfg = load_train_config(Path(__file__).parent.parent / "configs" / name)
    assert cfg.data.cache and cfg.max_steps > 0
