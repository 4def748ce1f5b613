"""The text-to-image pipeline: parity with diffusers' PixArtSigmaPipeline, seeds, batches, loading, T5 text.

Tiny random components everywhere: a 2-block transformer, a 1-layer T5 over a sentencepiece vocabulary trained
here from a few sentences, and a 4-level AutoencoderKL with 8 channels (so it downsamples 8x like SDXL's).
"""

from __future__ import annotations

import copy
import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from pixart.checkpoint import write_checkpoint
from pixart.components import ModelSources
from pixart.diffusion import make_scheduler
from pixart.model import PixArtSigma
from pixart.pipeline import Text2Image
from pixart.text import PromptEmbeddings, TextEncoder, load_tokenizer
from tests.conftest import make_diffusers_reference, randomize, tiny_config

# ---- tiny components (also used by test_generate_cli.py and test_vae.py) -------------------------------------------

SENTENCES = [
    "a photo of a cat sitting on a red sofa",
    "an astronaut riding a horse on the moon",
    "a watercolor painting of a lighthouse at dawn",
    "the quick brown fox jumps over the lazy dog",
    "a small cactus with a happy face in the desert",
]
MAX_TOKENS = 16


def write_tokenizer(folder: Path) -> Path:
    """A T5 tokenizer folder as published (spiece.model + tokenizer_config.json), from a vocabulary trained here."""
    import sentencepiece as spm

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(SENTENCES * 20),
        model_writer=buf,
        vocab_size=120,
        model_type="unigram",
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        character_coverage=1.0,
        hard_vocab_limit=False,
        minloglevel=3,
    )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "spiece.model").write_bytes(buf.getvalue())
    config = {
        "tokenizer_class": "T5Tokenizer",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "pad_token": "<pad>",
        "extra_ids": 100,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder


def tiny_t5(vocab_size: int, width: int = 16):
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(0)
    config = T5Config(vocab_size=vocab_size, d_model=width, d_ff=32, d_kv=8, num_heads=2, num_layers=1)
    return T5EncoderModel(config).eval()


def tiny_vae(**changes):
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    kwargs = dict(
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        block_out_channels=[8] * 4,
        norm_num_groups=4,
        layers_per_block=1,
        latent_channels=4,
        sample_size=32,
        scaling_factor=0.13025,
    )
    return AutoencoderKL(**{**kwargs, **changes}).eval()


@dataclass
class Tiny:
    cfg: object
    model: PixArtSigma
    tokenizer: object
    t5: torch.nn.Module
    vae: torch.nn.Module
    tokenizer_dir: Path

    def pipeline(self, model: PixArtSigma | None = None, **kwargs) -> Text2Image:
        text = TextEncoder(self.tokenizer, self.t5, max_length=self.cfg.max_tokens)
        return Text2Image(model or self.model, self.vae, text, device="cpu", **kwargs)


def make_tiny(root: Path) -> Tiny:
    cfg = tiny_config(max_tokens=MAX_TOKENS)
    tokenizer_dir = write_tokenizer(root / "tokenizer_src")
    tokenizer = load_tokenizer(tokenizer_dir)
    model = randomize(PixArtSigma(cfg)).eval()
    return Tiny(cfg, model, tokenizer, tiny_t5(len(tokenizer)), tiny_vae(), tokenizer_dir)


def write_pipeline_folder(tiny: Tiny, root: Path) -> Path:
    """A diffusers-layout pipeline folder, as published: model_index.json and one folder per component."""
    import shutil

    root.mkdir(parents=True, exist_ok=True)
    index = {
        "_class_name": "PixArtSigmaPipeline",
        "transformer": ["diffusers", "PixArtTransformer2DModel"],
        "text_encoder": ["transformers", "T5EncoderModel"],
        "tokenizer": ["transformers", "T5Tokenizer"],
        "vae": ["diffusers", "AutoencoderKL"],
        "scheduler": ["diffusers", "DPMSolverMultistepScheduler"],
    }
    (root / "model_index.json").write_text(json.dumps(index))
    write_checkpoint(tiny.model, root / "transformer", "diffusers")
    tiny.t5.save_pretrained(root / "text_encoder")
    shutil.copytree(tiny.tokenizer_dir, root / "tokenizer")
    tiny.vae.save_pretrained(root / "vae")
    make_scheduler("dpm-solver++").save_config(root / "scheduler")
    return root


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors run ~8x faster on one thread than on two when other processes share the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> Tiny:
    return make_tiny(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def pipeline_folder(tiny, tmp_path_factory) -> Path:
    return write_pipeline_folder(tiny, tmp_path_factory.mktemp("pipe") / "PixArt-Tiny")


PROMPTS = ["a cat on a red sofa", "a lighthouse"]


def _run(pipe: Text2Image, **kwargs) -> torch.Tensor:
    defaults = dict(steps=3, output="pt", check_memory=False)
    return pipe.generate(**{**defaults, **kwargs})


def diffusers_images(tiny: Tiny, scheduler, generator, *, cfg: float = 4.5, height: int = 64, width: int = 64):
    """PROMPTS through diffusers' PixArtSigmaPipeline on the same tiny components (3 steps, empty negative)."""
    from diffusers import PixArtSigmaPipeline

    reference = PixArtSigmaPipeline(
        tokenizer=tiny.tokenizer,
        text_encoder=tiny.t5,
        vae=tiny.vae,
        transformer=make_diffusers_reference(tiny.model, tiny.cfg),
        scheduler=scheduler,
    )
    reference.set_progress_bar_config(disable=True)
    return reference(
        PROMPTS,
        negative_prompt="",
        num_inference_steps=3,
        guidance_scale=cfg,
        height=height,
        width=width,
        generator=generator,
        use_resolution_binning=False,
        output_type="pt",
        max_sequence_length=MAX_TOKENS,
        clean_caption=False,
    ).images


# ---- parity with diffusers ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sampler", ["dpm-solver++", "ddim"])
@pytest.mark.parametrize("cfg", [1.0, 4.5])
@pytest.mark.parametrize("hw", [(64, 64), (64, 96)])
def test_matches_diffusers_pipeline(tiny, sampler, cfg, hw):
    height, width = hw
    ours = _run(
        tiny.pipeline(),
        prompt=PROMPTS,
        height=height,
        width=width,
        cfg=cfg,
        sampler=sampler,
        generator=torch.Generator().manual_seed(0),
    )
    theirs = diffusers_images(
        tiny, make_scheduler(sampler), torch.Generator().manual_seed(0), cfg=cfg, height=height, width=width
    )
    assert ours.shape == theirs.shape == (2, 3, height, width)
    assert ours.std() > 0.01  # a real image, not a constant
    assert (ours - theirs).abs().max() < 1e-4


def test_per_image_generators_match_diffusers_generator_list(tiny):
    """The CLI's seed rule (generator seed + i per image) is diffusers' list-of-generators rule."""
    seeds = [11, 12]
    ours = _run(tiny.pipeline(), prompt=PROMPTS, seed=11)
    theirs = diffusers_images(tiny, make_scheduler("dpm-solver++"), [torch.Generator().manual_seed(s) for s in seeds])
    assert (ours - theirs).abs().max() < 1e-4


# ---- seeds and batches ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sampler", ["dpm-solver++", "sa-solver", "iddpm"])
def test_batch_equals_singles(tiny, sampler):
    pipe = tiny.pipeline()
    batch = _run(pipe, prompt=PROMPTS, num_images=2, seed=5, sampler=sampler)  # prompt-major: seeds 5, 6, 7, 8
    assert batch.shape[0] == 4
    for k in range(4):
        single = _run(pipe, prompt=PROMPTS[k // 2], seed=5 + k, sampler=sampler)
        assert (batch[k] - single[0]).abs().max() < 1e-5, k


def test_same_seed_same_image_other_seed_other_image(tiny):
    pipe = tiny.pipeline()
    a = _run(pipe, prompt="a cat", seed=3, sampler="sa-solver")
    b = _run(pipe, prompt="a cat", seed=3, sampler="sa-solver")
    c = _run(pipe, prompt="a cat", seed=4, sampler="sa-solver")
    assert torch.equal(a, b)
    assert (a - c).abs().max() > 1e-3


@pytest.mark.parametrize("sampler", ["euler", "iddpm", "sa-solver"])
def test_other_samplers_run(tiny, sampler):
    images = _run(tiny.pipeline(), prompt="a cat", seed=0, sampler=sampler, steps=4, height=48, width=80)
    assert images.shape == (1, 3, 48, 80) and torch.isfinite(images).all()


# ---- v-prediction --------------------------------------------------------------------------------------------------


def test_v_prediction_model_matches_diffusers_with_a_v_prediction_scheduler(tiny):
    model = copy.deepcopy(tiny.model)
    model.cfg = model.cfg.replace(prediction="v")
    ours = _run(tiny.pipeline(model), prompt=PROMPTS, cfg=4.5, generator=torch.Generator().manual_seed(0))
    v_scheduler = make_scheduler("dpm-solver++", {"prediction_type": "v_prediction"})
    theirs = diffusers_images(tiny, v_scheduler, torch.Generator().manual_seed(0))
    eps_reading = _run(tiny.pipeline(), prompt=PROMPTS, cfg=4.5, generator=torch.Generator().manual_seed(0))
    assert (ours - theirs).abs().max() < 1e-4
    assert (ours - eps_reading).abs().max() > 1e-2  # the same weights read as ε give another image


class EpsFromV(torch.nn.Module):
    """A v-prediction model presented as an ε model: ε = sqrt(ᾱ_t) v + sqrt(1 - ᾱ_t) x_t, by hand."""

    def __init__(self, v_model: PixArtSigma):
        super().__init__()
        self.inner, self.cfg = v_model, v_model.cfg.replace(prediction="epsilon")

    def forward(self, x, t, caption, mask, **kwargs):
        from pixart.diffusion.losses import GaussianDiffusion

        out = self.inner(x, t, caption, mask, **kwargs)  # (B, 2C, H, W): v, variance values
        assert torch.equal(t, t.round())  # integer timesteps: the table lookup below is exact
        eps = GaussianDiffusion.linear(1000).eps_from_v(out[:, : x.shape[1]].double(), x.double(), t).float()
        return torch.cat([eps, out[:, x.shape[1] :]], dim=1)


@pytest.mark.parametrize("sampler", ["dpm-solver++", "ddim", "sa-solver", "iddpm"])
def test_v_prediction_model_samples_as_its_epsilon_would(tiny, sampler):
    """Every sampler reads a v-model (`prediction="v"`, the scheduler's v_prediction) as the ε it implies."""
    model = copy.deepcopy(tiny.model)
    model.cfg = model.cfg.replace(prediction="v")
    ours = _run(tiny.pipeline(model), prompt="a cat", seed=2, sampler=sampler, steps=4)
    by_hand = _run(tiny.pipeline(EpsFromV(model)), prompt="a cat", seed=2, sampler=sampler, steps=4)
    assert ours.std() > 0.01
    assert (ours - by_hand).abs().max() < 1e-4


def test_micro_conditioned_model_gets_its_size_conditions(tiny):
    """PixArt-α 1024-MS style: resolution (h, w) and aspect ratio h / w, as diffusers' PixArtAlphaPipeline."""
    model = randomize(PixArtSigma(tiny_config(max_tokens=MAX_TOKENS, micro_condition=True))).eval()
    pipe = tiny.pipeline(model=model)
    wide, tall = _run(pipe, prompt="a cat", seed=0, height=48, width=96), _run(pipe, prompt="a cat", seed=0)
    assert torch.isfinite(wide).all() and wide.shape == (1, 3, 48, 96) and tall.shape == (1, 3, 64, 64)


def test_pil_output_and_native_default_size(tiny):
    images = tiny.pipeline().generate("a cat", steps=2, seed=0, check_memory=False)
    assert len(images) == 1 and images[0].size == (64, 64) and images[0].mode == "RGB"


# ---- guidance ---------------------------------------------------------------------------------------------------


def test_cfg_semantics_differ_only_in_the_null_mask(tiny):
    pipe = tiny.pipeline()
    diffusers_cfg = _run(pipe, prompt="a cat", seed=0, cfg_semantics="diffusers")
    official = _run(pipe, prompt="a cat", seed=0, cfg_semantics="official")
    unguided = [_run(pipe, prompt="a cat", seed=0, cfg=1.0, cfg_semantics=s) for s in ("diffusers", "official")]
    assert (diffusers_cfg - official).abs().max() > 1e-4  # "a cat" has more tokens than "" (1 token: </s>)
    assert torch.equal(unguided[0], unguided[1])  # no null branch, nothing differs


def test_cfg_one_runs_one_forward_per_step(tiny):
    calls = []
    model = tiny.model
    hook = model.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[0]))
    try:
        _run(tiny.pipeline(), prompt=PROMPTS, seed=0, cfg=1.0, steps=2)
        assert calls == [2, 2]
        calls.clear()
        _run(tiny.pipeline(), prompt=PROMPTS, seed=0, cfg=3.0, steps=2)
        assert calls == [4, 4]
    finally:
        hook.remove()


# ---- text ----------------------------------------------------------------------------------------------------


def test_text_encoder_pads_to_max_length_and_keeps_the_mask(tiny):
    text = TextEncoder(tiny.tokenizer, tiny.t5, max_length=MAX_TOKENS)
    features, mask = text.encode(["a cat", ""])
    assert features.shape == (2, MAX_TOKENS, 16) and mask.shape == (2, MAX_TOKENS)
    assert mask[1].sum() == 1  # "" is just </s>
    assert 1 < mask[0].sum() < MAX_TOKENS and mask[0, : mask[0].sum()].all()


def test_truncation_warning_says_how_many_tokens_were_cut(tiny, caplog):
    text = TextEncoder(tiny.tokenizer, tiny.t5, max_length=MAX_TOKENS)
    long_prompt = " ".join(SENTENCES)
    n_tokens = len(tiny.tokenizer(long_prompt).input_ids)
    with caplog.at_level(logging.WARNING, logger="pixart.text"):
        text.encode([long_prompt])
    assert f"its last {n_tokens - MAX_TOKENS} tokens were cut" in caplog.text


def test_tokenizer_without_vocabulary_is_an_error(tmp_path, tiny):
    folder = tmp_path / "tok"
    folder.mkdir()
    (folder / "tokenizer_config.json").write_text((tiny.tokenizer_dir / "tokenizer_config.json").read_text())
    with pytest.raises(ValueError, match="no usable vocabulary"):
        load_tokenizer(folder)  # transformers 5 would silently build a specials-only tokenizer here


def test_precomputed_embeddings_round_trip_without_t5(tiny, tmp_path):
    pipe = tiny.pipeline()
    embeddings = pipe.encode(PROMPTS, negative="blurry")
    embeddings.save(tmp_path / "e.safetensors")
    loaded = PromptEmbeddings.load(tmp_path / "e.safetensors")
    assert loaded.prompts == PROMPTS and loaded.negative == "blurry"
    no_t5 = Text2Image(tiny.model, tiny.vae, None, device="cpu")
    from_file = _run(no_t5, prompt=loaded, seed=1)
    from_text = _run(pipe, prompt=PROMPTS, negative="blurry", seed=1)
    assert (from_file - from_text).abs().max() < 1e-6
    with pytest.raises(ValueError, match="no text encoder"):
        _run(no_t5, prompt="a cat", seed=1)


# ---- loading -----------------------------------------------------------------------------------------------------


def test_pipeline_folder_loads_lazily_and_matches(tiny, pipeline_folder):
    pipe = Text2Image.from_pretrained(pipeline_folder, device="cpu", keep_text_encoder=False)
    assert pipe._transformer is None and pipe._text_encoder is None and pipe._vae is None
    assert pipe.native_size == 64 and pipe.name == "PixArt-Tiny"  # from the checkpoint header alone
    loaded = _run(pipe, prompt=PROMPTS, seed=2)
    assert pipe._text_encoder is None  # freed after encoding
    assert (loaded - _run(tiny.pipeline(), prompt=PROMPTS, seed=2)).abs().max() < 1e-5


def test_t5_is_freed_by_default_only_for_images_above_the_native_size(pipeline_folder):
    pipe = Text2Image.from_pretrained(pipeline_folder, device="cpu")
    _run(pipe, prompt="a cat", seed=0, steps=1)  # 64x64: the native size
    assert pipe._text_encoder is not None
    _run(pipe, prompt="a cat", seed=0, steps=1, width=96)
    assert pipe._text_encoder is None
    _run(pipe, prompt="a cat", seed=0, steps=1)  # reloaded when needed again
    assert pipe._text_encoder is not None


def test_official_checkpoint_with_text_encoder_and_vae_folders(tiny, pipeline_folder, tmp_path):
    pth = write_checkpoint(tiny.model, tmp_path / "PixArt-Tiny.pth", "official")
    # An official .pth carries no config: what shapes cannot tell comes from a preset (or, here, our config).
    pipe = Text2Image.from_pretrained(
        pth, text_encoder=pipeline_folder, vae=pipeline_folder / "vae", config=tiny.cfg, device="cpu"
    )
    loaded = _run(pipe, prompt="a cat", seed=2)
    assert (loaded - _run(tiny.pipeline(), prompt="a cat", seed=2)).abs().max() < 1e-5


def test_missing_components_are_named(tmp_path, pipeline_folder):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ModelSources.resolve(tmp_path / "nope")
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(pipeline_folder, broken)
    shutil.rmtree(broken / "vae")
    with pytest.raises(FileNotFoundError, match=r"has no vae/.*--vae DIR"):
        ModelSources.resolve(broken)
    assert ModelSources.resolve(broken, vae=pipeline_folder / "vae").vae == pipeline_folder / "vae"
    with pytest.raises(ValueError, match="--text-encoder DIR and --vae DIR"):
        ModelSources.resolve(pipeline_folder / "transformer")


# ---- KV compression and memory ------------------------------------------------------------------------------------


def test_kv_compression_at_inference(tiny, caplog):
    pipe = tiny.pipeline(model=copy.deepcopy(tiny.model))
    plain = _run(pipe, prompt="a cat", seed=0)
    with caplog.at_level(logging.WARNING, logger="pixart.pipeline"):
        pipe.enable_kv_compression([1], factor=2, sampling="conv")
    assert "costs some image quality" in caplog.text
    assert pipe.kv_compression == ("1", 2, "conv")
    compressed = _run(pipe, prompt="a cat", seed=0)
    assert compressed.shape == plain.shape and (compressed - plain).abs().max() > 1e-4
    with pytest.raises(ValueError, match="blocks 0..1"):
        pipe.enable_kv_compression([5])


def test_memory_check_refuses_naming_flags(tiny, monkeypatch):
    pipe = tiny.pipeline()
    estimate = pipe.estimate_memory(3840, 2560)
    assert estimate.peak > 0 and set(estimate.stages) == {"encode", "denoise", "decode"}
    monkeypatch.setattr("pixart.pipeline.available_memory", lambda device: 1 << 20)
    with pytest.raises(ValueError, match=r"not enough memory: .* try .*--skip-memory-check"):
        pipe.generate("a cat", steps=1, seed=0)
