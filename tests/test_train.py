"""The training loop on a tiny model and a feature cache: it learns, resumes exactly, survives kills."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from test_cache import make_data, prepare

from pixart.data.cache_read import read_null_caption
from pixart.train.config import load_train_config
from pixart.train.loop import main
from pixart.train.state import latest_checkpoint, list_checkpoints, load_checkpoint

TINY_MODEL = (
    'model.config={"depth": 2, "hidden_size": 48, "num_heads": 3, "caption_channels": 6, '
    '"max_tokens": 8, "sample_size": 4, "pe_interpolation": 1.0}'
)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    # Buckets whose latents (1/8 size) divide by the patch size 2.
    prepare(make_data(root / "data", n=9), root / "cache", bins={"0.5": (16, 32), "1.0": (32, 32), "2.0": (32, 16)})
    return root / "cache"


def config(cache, out, *extra):
    return load_train_config(
        None,
        [
            f"data.cache={cache}",
            f"output_dir={out}",
            TINY_MODEL,
            "batch_size=4",
            "max_steps=6",
            "checkpoint_every=2",
            "log_every=1",
            "optim.lr=1e-3",
            "optim.warmup_steps=2",
            "optim.sqrt_lr_scaling=false",
            "optim.grad_clip=1.0",
            "data.max_tokens=8",
            *extra,
        ],
    )


def test_loss_goes_down_and_logs_are_written(cache, tmp_path):
    cfg = config(cache, tmp_path / "run", "max_steps=30", "optim.lr=3e-3", "checkpoint_every=30")
    losses = main(cfg)
    assert len(losses) == 30 and all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-5:]) < sum(losses[:5])
    rows = (tmp_path / "run" / "log.csv").read_text().splitlines()
    assert rows[0].startswith("step,loss,mse,vb,lr,grad_norm,images_per_s") and len(rows) == 31
    assert (tmp_path / "run" / "config.json").is_file()


@pytest.fixture(scope="module")
def full_run(cache, tmp_path_factory):
    """An uninterrupted 6-step run with EMA: (losses, output folder)."""
    out = tmp_path_factory.mktemp("full") / "run"
    return main(config(cache, out, "ema_decay=0.9")), out


def test_resume_repeats_the_uninterrupted_loss_sequence(cache, full_run, tmp_path):
    full, full_out = full_run
    part1 = main(config(cache, tmp_path / "split", "ema_decay=0.9"), stop_after=3)  # checkpoints at 2 and 3
    part2 = main(config(cache, tmp_path / "split", "ema_decay=0.9"))  # resumes at step 3
    assert part1 + part2 == full  # bitwise: same floats
    a = load_checkpoint(latest_checkpoint(full_out / "checkpoints"))
    b = load_checkpoint(latest_checkpoint(tmp_path / "split" / "checkpoints"))
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
        assert torch.equal(a["ema"][key], b["ema"][key]), key


def test_a_kill_loses_only_the_steps_since_the_last_checkpoint(cache, full_run, tmp_path):
    full, _ = full_run
    out = tmp_path / "killed"
    main(config(cache, out, "ema_decay=0.9"), stop_after=3)
    ckpts = out / "checkpoints"
    # As if killed during step 3's save: its folder is still a temporary one, step 2 is the newest complete.
    (ckpts / "step-00000003").rename(ckpts / "step-00000003.tmp-999")
    assert [p.name for p in list_checkpoints(ckpts)] == ["step-00000002"]
    rest = main(config(cache, out, "ema_decay=0.9"))
    assert rest == full[2:]
    assert not list(ckpts.glob("*.tmp*"))
    assert [p.name for p in list_checkpoints(ckpts)] == ["step-00000002", "step-00000004", "step-00000006"]


def test_worker_processes_give_the_same_run_and_it_resumes_where_training_was(cache, full_run, tmp_path):
    full, _ = full_run
    out = tmp_path / "workers"
    # Two DataLoader workers build batches ahead of the loop; the checkpoint at step 4 must still say "after the
    # 4th batch" (epoch 1, 1 batch done: 3 batches per epoch), so the resumed run without workers goes on exactly.
    part1 = main(config(cache, out, "ema_decay=0.9", "data.num_workers=2"), stop_after=4)
    state = load_checkpoint(latest_checkpoint(out / "checkpoints"))["state"]
    assert (state.step, state.sampler["epoch"], state.sampler["batches_done"]) == (4, 1, 1)
    part2 = main(config(cache, out, "ema_decay=0.9"))
    assert part1 + part2 == full


def test_keeps_the_last_n_checkpoints_and_they_load_as_models(cache, tmp_path):
    from pixart.checkpoint import load_transformer

    main(config(cache, tmp_path / "run", "keep_checkpoints=2", "checkpoint_every=1"))
    names = [p.name for p in list_checkpoints(tmp_path / "run" / "checkpoints")]
    assert names == ["step-00000005", "step-00000006"]
    model = load_transformer(tmp_path / "run" / "checkpoints" / "step-00000006" / "transformer.safetensors")
    assert model.cfg.depth == 2 and model.cfg.caption_channels == 6
    # dropped captions trained on T5(""), the null caption CFG uses at inference, not a random one
    assert torch.equal(model.y_embedder.y_embedding, read_null_caption(cache))


def test_resume_refuses_a_different_batch_size(cache, tmp_path):
    main(config(cache, tmp_path / "run"), stop_after=2)
    with pytest.raises(ValueError, match="global_batch_size"):
        main(config(cache, tmp_path / "run", "batch_size=2"))


def test_min_snr_weighting_changes_the_objective_and_is_validated(cache, tmp_path):
    plain = main(config(cache, tmp_path / "a", "max_steps=4"))
    weighted = main(config(cache, tmp_path / "b", "max_steps=4", "snr_gamma=5"))
    assert all(torch.isfinite(torch.tensor(weighted))) and weighted != plain
    with pytest.raises(ValueError, match="snr_gamma=-1.0: must be >= 0"):
        main(config(cache, tmp_path / "c", "snr_gamma=-1"))


def test_foreground_weighting_changes_the_objective_and_is_validated(cache, tmp_path):
    plain = main(config(cache, tmp_path / "a", "max_steps=4"))
    # This cache's random-VAE latents lie within about 0.17 of their medians: 0.15 marks some cells, not all.
    weighted = main(config(cache, tmp_path / "b", "max_steps=4", "foreground_weight=4", "foreground_threshold=0.15"))
    assert all(torch.isfinite(torch.tensor(weighted))) and weighted != plain
    with pytest.raises(ValueError, match="foreground_weight=-1.0: must be >= 0"):
        main(config(cache, tmp_path / "c", "foreground_weight=-1"))
    with pytest.raises(ValueError, match="foreground_threshold=0.0: must be > 0"):
        main(config(cache, tmp_path / "d", "foreground_threshold=0"))


def test_lr_schedule_warms_up_holds_and_cools_down_to_its_floor():
    from pixart.train.optim import lr_at

    assert [lr_at(s, 1.0, 4) for s in (1, 2, 4, 100)] == [0.25, 0.5, 1.0, 1.0]  # the reference: then constant
    linear = [lr_at(s, 1.0, 2, decay="linear", decay_steps=4, max_steps=10) for s in range(1, 11)]
    assert linear == pytest.approx([0.5, 1, 1, 1, 1, 1, 0.75, 0.5, 0.25, 0.0])
    cosine = [lr_at(s, 2.0, 0, decay="cosine", max_steps=4, min_lr_ratio=0.5) for s in range(1, 5)]
    # over all 4 steps from 2.0 to 1.0: 1 + (1 + cos(pi * k/4)) / 2
    assert cosine == pytest.approx([1 + (1 + 2**-0.5) / 2, 1.5, 1 + (1 - 2**-0.5) / 2, 1.0])
    assert lr_at(12, 1.0, 2, decay="linear", decay_steps=4, max_steps=10) == 0.0  # past the end: the floor


def test_the_loop_logs_the_decayed_lr_and_rejects_bad_schedules(cache, tmp_path):
    main(config(cache, tmp_path / "a", "optim.decay=linear", "optim.decay_steps=3", "optim.min_lr_ratio=0.1"))
    rows = (tmp_path / "a" / "log.csv").read_text().splitlines()[1:]
    lrs = [float(r.split(",")[4]) for r in rows]  # steps 1..6: warmup 2, hold, then 3 steps down to 1e-4
    assert lrs == pytest.approx([5e-4, 1e-3, 1e-3, 7e-4, 4e-4, 1e-4])
    with pytest.raises(ValueError, match="optim.decay='step': allowed are none, linear, cosine"):
        main(config(cache, tmp_path / "b", "optim.decay=step"))
    with pytest.raises(ValueError, match=r"optim.min_lr_ratio=1.5: must be in \[0, 1\]"):
        main(config(cache, tmp_path / "c", "optim.decay=cosine", "optim.min_lr_ratio=1.5"))
    assert not (tmp_path / "b").exists() and not (tmp_path / "c").exists()


def test_logit_normal_timesteps_follow_their_density_and_keep_uniform_unchanged():
    from pixart.data.sampler import sample_generator
    from pixart.train.loop import STREAM_STEP, step_randomness

    def draw(*extra):
        cfg = load_train_config(None, ["data.cache=c", "batch_size=20000", *extra])
        return step_randomness(cfg, 3, (1, 1, 1), 1000, 0.1)[1]

    expected = torch.randint(0, 1000, (20000,), generator=sample_generator(0, 3, 0, STREAM_STEP))
    assert torch.equal(draw(), expected), "the uniform draw must stay what resumed runs drew before"
    shifted = draw("timestep_sampling=logit_normal", "timestep_logit_mean=1.0", "timestep_logit_std=0.5")
    assert shifted.min() >= 0 and shifted.max() <= 999
    for edge in (500, 700, 850):  # P(t < edge) = Φ((logit(edge / 1000) - 1) / 0.5), within sampling error
        p = torch.special.ndtr((torch.tensor(edge / 1000).logit() - 1.0) / 0.5).item()
        assert abs((shifted < edge).float().mean().item() - p) < 0.012
    with pytest.raises(ValueError, match="timestep_sampling='cosine': allowed are uniform, logit_normal"):
        load_train_config(None, ["data.cache=c", "timestep_sampling=cosine"])
    with pytest.raises(ValueError, match="timestep_logit_std=0.0: must be > 0"):
        load_train_config(None, ["data.cache=c", "timestep_logit_std=0"])


def test_high_noise_fraction_redraws_that_share_of_timesteps_and_nothing_else():
    from pixart.train.loop import step_randomness

    def draw(*extra):
        cfg = load_train_config(None, ["data.cache=c", "batch_size=20000", *extra])
        return step_randomness(cfg, 3, (1, 1, 1), 1000, 0.1)

    noise, t, drop = draw()
    noise_h, t_h, drop_h = draw("timestep_high_fraction=0.4", "timestep_high_from=850")
    assert torch.equal(noise, noise_h) and torch.equal(drop, drop_h), "only the timesteps may change"
    changed = t_h != t
    assert abs((t_h >= 850).float().mean().item() - (0.4 + 0.6 * 0.15)) < 0.012  # redrawn share + uniform's own
    assert t_h[changed].min() >= 850 and t_h.max() <= 999
    assert abs(changed.float().mean().item() - 0.4) < 0.012  # a redraw lands on the old t 1 time in 150 at most
    top = t_h[changed].float()
    assert abs(top.mean().item() - 924.5) < 2.0  # uniform over [850, 999]
    everything = draw("timestep_high_fraction=1", "timestep_high_from=999")[1]
    assert torch.equal(everything, torch.full_like(everything, 999))
    with pytest.raises(ValueError, match=r"timestep_high_fraction=1.5: must be in \[0, 1\]"):
        load_train_config(None, ["data.cache=c", "timestep_high_fraction=1.5"])
    with pytest.raises(ValueError, match=r"timestep_high_from=1000: must be in \[0, 999\]"):
        load_train_config(None, ["data.cache=c", "timestep_high_from=1000"])


def test_v_prediction_trains_on_v_and_later_stages_keep_it(cache, tmp_path):
    from pixart.checkpoint import load_transformer

    v_model = TINY_MODEL[:-1] + ', "prediction": "v"}'
    eps = main(config(cache, tmp_path / "eps", "max_steps=2"))
    v = main(config(cache, tmp_path / "v", "max_steps=2", v_model))
    # Same seed, batches and noise: only the target differs (ε's MSE at the zero-initialised output is ~1).
    assert all(torch.isfinite(torch.tensor(v))) and abs(v[0] - eps[0]) > 0.05
    weights = latest_checkpoint(tmp_path / "v" / "checkpoints") / "transformer.safetensors"
    assert load_transformer(weights).cfg.prediction == "v"
    # A later stage (init_from) keeps the target; `model.config.prediction` retargets it (fine-tuning ε <-> v).
    for out, overrides, expected in (("next", "{}", "v"), ("re", '{"prediction": "epsilon"}', "epsilon")):
        main(config(cache, tmp_path / out, "max_steps=1", f"model.init_from={weights}", f"model.config={overrides}"))
        after = latest_checkpoint(tmp_path / out / "checkpoints") / "transformer.safetensors"
        assert load_transformer(after).cfg.prediction == expected, out


def test_runs_with_different_mixed_precision_follow_each_other_in_one_process(cache, tmp_path):
    # The demo build trains its stages in one process, the first ones in fp32 and later ones in bf16.
    for i, precision in enumerate(("no", "bf16", "no")):
        run = tmp_path / f"run{i}"
        losses = main(config(cache, run, "max_steps=2", f"mixed_precision={precision}"))
        assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
        assert json.loads((run / "config.json").read_text())["mixed_precision"] == precision


def test_grad_accumulation_equals_the_full_batch(cache, tmp_path):
    one = main(config(cache, tmp_path / "a", "max_steps=3"))
    accum = main(config(cache, tmp_path / "b", "max_steps=3", "grad_accum=2"))
    torch.testing.assert_close(torch.tensor(accum), torch.tensor(one), atol=1e-5, rtol=1e-5)


def test_weak_to_strong_stages_change_only_what_they_say(cache, tmp_path):
    main(config(cache, tmp_path / "base", "max_steps=2"))
    base = tmp_path / "base" / "checkpoints" / "step-00000002" / "transformer.safetensors"
    out = tmp_path / "kv"
    main(
        config(
            cache,
            out,
            "max_steps=1",
            f"model.init_from={base}",
            "model.config={}",
            "model.kv_compress_layers=[1]",
            "model.sample_size=8",
            "model.pe_interpolation=2.0",
        )
    )
    ckpt = load_checkpoint(latest_checkpoint(out / "checkpoints"))
    assert "blocks.1.attn.sr.weight" in ckpt["model"] and "blocks.0.attn.sr.weight" not in ckpt["model"]
    shutil.rmtree(out)


FSDP_ENV = {  # what `accelerate launch --use_fsdp --fsdp_version 2 ...` exports to each process
    "ACCELERATE_USE_FSDP": "true",
    "FSDP_VERSION": "2",
    "FSDP_AUTO_WRAP_POLICY": "TRANSFORMER_BASED_WRAP",
    "FSDP_TRANSFORMER_CLS_TO_WRAP": "PixArtBlock",
    "FSDP_RESHARD_AFTER_FORWARD": "true",
    "FSDP_STATE_DICT_TYPE": "FULL_STATE_DICT",
}


def save_text_encoder_and_vae(folder, width: int):
    """A tiny T5 (features `width` wide) with its tokenizer, and a tiny 4-channel VAE: what validation needs."""
    from test_prepare_cli import save_tokenizer, save_vae
    from transformers import T5Config, T5EncoderModel

    t5 = folder / "t5"
    t5.mkdir(parents=True)
    save_tokenizer(t5)
    torch.manual_seed(0)
    T5EncoderModel(
        T5Config(
            vocab_size=64, d_model=width, d_kv=4, d_ff=16, num_layers=1, num_heads=2, relative_attention_num_buckets=8
        )
    ).save_pretrained(t5)
    save_vae(folder / "vae")
    return t5, folder / "vae"


@pytest.mark.parametrize("strategy", ["ddp", "fsdp-on-gpus-only", "fsdp"])
def test_two_processes_equal_one_with_the_same_global_batch(cache, tmp_path, strategy):
    """torchrun, 2 CPU processes (gloo) vs one process: same weights and EMA after 3 steps.

    - ddp: accelerate's DDP.
    - fsdp-on-gpus-only: the FSDP environment of `accelerate launch --use_fsdp`, as is; accelerate on CPU falls
      back to DDP (it shards only on accelerators), and the run must say so and still be right.
    - fsdp: the same environment through tests/fsdp_on_cpu.py, which lifts accelerate's device gate, so the loop
      runs accelerate's real FSDP2 path: parameters sharded per block, state dicts and optimizer state gathered
      for checkpoints, the EMA gathered each step, validation images from an unsharded copy.

    Tolerance 1e-6: the processes sum the two halves' gradients in another order than one backward over the whole
    batch does, so the floats can differ in the last bits.
    """
    import os
    import subprocess
    import sys
    from pathlib import Path

    sets = [
        f"data.cache={cache}",
        TINY_MODEL,
        "batch_size=4",
        "max_steps=3",
        "optim.lr=1e-3",
        "optim.warmup_steps=1",
        "data.max_tokens=8",
        "ema_decay=0.5",
        "checkpoint_every=2",
        "optim.sqrt_lr_scaling=false",
        "optim.grad_clip=1.0",
        "log_every=1",
    ]
    if strategy == "fsdp":  # validation too: a sharded model's forward needs every process
        t5, vae = save_text_encoder_and_vae(tmp_path / "encoders", width=6)
        sets += [f"data.text_encoder={t5}", f"data.vae={vae}", 'validation.prompts=["a red apple"]',
                 "validation.seeds=[0]", "validation.steps=2", "validation.size=[32, 32]"]  # fmt: skip
    single = main(config(cache, tmp_path / "one", "max_steps=3", "optim.warmup_steps=1", "ema_decay=0.5"))
    program = [str(Path(__file__).parent / "fsdp_on_cpu.py")] if strategy == "fsdp" else ["-m", "pixart.cli"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *program, "train"]
    cmd += [arg for value in [*sets, f"output_dir={tmp_path / 'two'}"] for arg in ("--set", value)]
    env = dict(os.environ, OMP_NUM_THREADS="1", **(FSDP_ENV if strategy.startswith("fsdp") else {}))
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    if strategy == "fsdp":
        assert "accelerate: FSDP on cpu:0, 2 process(es)" in result.stderr
        assert "FSDP: this process holds 50.0%" in result.stderr  # each process keeps half of every weight
        grids = sorted((tmp_path / "two" / "validation").glob("*.png"))
        assert [g.name for g in grids] == ["step-00000000.png", "step-00000003.png"]
    else:  # accelerate runs FSDP only on accelerators: on CPU the request must be reported, not silently dropped
        assert "accelerate: MULTI_CPU on cpu:0, 2 process(es)" in result.stderr
        assert ("FSDP was requested" in result.stderr) == (strategy == "fsdp-on-gpus-only")
    a = load_checkpoint(latest_checkpoint(tmp_path / "one" / "checkpoints"))
    b = load_checkpoint(latest_checkpoint(tmp_path / "two" / "checkpoints"))
    for part in ("model", "ema"):
        assert a[part].keys() == b[part].keys()
        for key in a[part]:
            torch.testing.assert_close(a[part][key], b[part][key], atol=1e-6, rtol=1e-5, msg=f"{part} {key}")
    logged = [float(r.split(",")[1]) for r in (tmp_path / "two" / "log.csv").read_text().splitlines()[1:]]
    torch.testing.assert_close(torch.tensor(logged), torch.tensor(single), atol=1e-5, rtol=1e-5)
    if strategy == "fsdp":  # resume: each process restores its shards of the weights and optimizer state
        shutil.rmtree(latest_checkpoint(tmp_path / "two" / "checkpoints"))  # back to step 2
        result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        assert "resumed from" in result.stderr
        again = load_checkpoint(latest_checkpoint(tmp_path / "two" / "checkpoints"))
        for part in ("model", "ema"):
            for key in b[part]:
                torch.testing.assert_close(again[part][key], b[part][key], atol=1e-7, rtol=0, msg=f"{part} {key}")


def test_raw_images_with_validation_images_before_and_after(tmp_path):
    """No cache: T5 and the VAE encode in the loop; validation grids are written at step 0 and at the end."""
    from PIL import Image
    from test_dataset import write_image
    from test_prepare_cli import CORPUS, save_tokenizer, save_vae
    from transformers import T5Config, T5EncoderModel

    t5 = tmp_path / "t5"
    t5.mkdir()
    save_tokenizer(t5)
    torch.manual_seed(0)
    T5EncoderModel(
        T5Config(
            vocab_size=64, d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2, relative_attention_num_buckets=8
        )
    ).save_pretrained(t5)
    save_vae(tmp_path / "vae")
    data = tmp_path / "data"
    for i, (w, h) in enumerate([(64, 32), (32, 64), (64, 32), (48, 48)]):
        write_image(data / f"{i}.png", w, h, seed=i)
        (data / f"{i}.txt").write_text(CORPUS[i])
    model = TINY_MODEL.replace('"caption_channels": 6', '"caption_channels": 16')
    cfg = load_train_config(None, [
        f"data.path={data}", f"data.text_encoder={t5}", f"data.vae={tmp_path / 'vae'}", "data.resolution=256",
        "data.multi_scale=false", "data.max_tokens=8", model, f"output_dir={tmp_path / 'run'}", "batch_size=2",
        "max_steps=2", "validation.prompts=[\"a red apple\", \"a cat\"]", "validation.seeds=[0, 1]",
        "validation.steps=2", "validation.size=[32, 32]",
    ])  # fmt: skip
    losses = main(cfg)
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    grids = sorted((tmp_path / "run" / "validation").glob("*.png"))
    assert [g.name for g in grids] == ["step-00000000.png", "step-00000002.png"]
    assert Image.open(grids[0]).size == (64, 64)  # 2 seeds x 2 prompts of 32 x 32


def test_lora_training_freezes_the_base_and_saves_adapters(cache, tmp_path):
    from pixart.train.lora import load_lora

    main(config(cache, tmp_path / "base", "max_steps=1"))
    base = tmp_path / "base" / "checkpoints" / "step-00000001" / "transformer.safetensors"
    main(config(cache, tmp_path / "lora", "max_steps=2", f"model.init_from={base}", "model.config={}", "lora.rank=2"))
    folder = latest_checkpoint(tmp_path / "lora" / "checkpoints")
    tensors, meta = load_lora(folder / "lora.safetensors")
    assert meta["rank"] == 2 and any(k.endswith("lora_B.weight") for k in tensors)
    before = load_checkpoint(latest_checkpoint(tmp_path / "base" / "checkpoints"))["model"]
    after = load_checkpoint(folder)["model"]
    assert torch.equal(after["blocks.0.attn.qkv.base_layer.weight"], before["blocks.0.attn.qkv.weight"])


def test_kill_9_mid_run_leaves_loadable_checkpoints_and_resumes(cache, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "run"
    sets = [
        f"data.cache={cache}",
        TINY_MODEL,
        "batch_size=4",
        "max_steps=400",
        "checkpoint_every=1",
        "data.max_tokens=8",
        f"output_dir={out}",
        "keep_checkpoints=2",
    ]
    cmd = [sys.executable, "-m", "pixart.cli", "-q", "train", *[a for s in sets for a in ("--set", s)]]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=dict(os.environ, OMP_NUM_THREADS="1")
    )
    deadline = time.time() + 120
    while time.time() < deadline and len(list_checkpoints(out / "checkpoints")) < 3:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # wherever it is: mid-step or mid-save
    proc.wait()
    done = list_checkpoints(out / "checkpoints")
    assert done, "no checkpoint was written before the kill"
    for folder in done:
        load_checkpoint(folder)  # complete and readable
    step = load_checkpoint(done[-1])["state"].step
    resumed = main(config(cache, out, f"max_steps={step + 2}", "checkpoint_every=1", "keep_checkpoints=2"))
    assert len(resumed) == 2


@pytest.mark.slow  # inductor compiles C++ kernels: 1-3 minutes on 2 cores
def test_compiled_training_matches_eager(cache, full_run, tmp_path):
    """`compile = true` (torch.compile, inductor's C++ kernels on CPU) trains the same model: same losses within
    float tolerance (fused kernels round differently), and its checkpoints hold plain (uncompiled) keys."""
    compiled = main(config(cache, tmp_path / "compiled", "compile=true"))
    torch.testing.assert_close(torch.tensor(compiled), torch.tensor(full_run[0]), atol=1e-4, rtol=1e-4)
    state = load_checkpoint(latest_checkpoint(tmp_path / "compiled" / "checkpoints"))["model"]
    assert not any(k.startswith("_orig_mod") for k in state)
