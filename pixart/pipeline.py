"""Text-to-image with PixArt-Σ: prompts -> T5 -> transformer + sampler -> VAE -> images.

    pipe = Text2Image.from_pretrained("PixArt-Sigma-XL-2-1024-MS")          # a diffusers-layout folder
    images = pipe.generate("a small cactus with a happy face", seed=0)      # list of PIL images

Components load lazily, each on first use, so a run holds at most what it needs: T5 alone while encoding,
then the transformer, then the VAE. T5 (4.7B parameters) is freed after encoding for images larger than the
model's native square, or always/never with `keep_text_encoder=False/True`. Prompts can also come precomputed
(`pipe.encode(...)`, `PromptEmbeddings.save/load`), and then T5 is never loaded.

Seeds: image i of a call (prompt-major: every image of prompt 0, then of prompt 1, ...) is drawn from its own
generator seeded `seed + i`, so it can be regenerated alone with `seed=seed + i`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
from pathlib import Path

import torch
from torch import Tensor

from pixart.aspect import check_size
from pixart.components import ModelSources, default_dtype, resolve_device
from pixart.config import SCHEDULER_PREDICTION
from pixart.diffusion import Conditioning, generators_for, get_sampler, initial_noise, make_denoiser, sample
from pixart.diffusion.schedules import noise_schedule, read_noise_schedule
from pixart.memory import (
    AUTO_TILE_FRACTION,
    MemoryEstimate,
    available_memory,
    count_parameters,
    decode_bytes,
    estimate_generation,
)
from pixart.text import PromptEmbeddings, TextEncoder, resolve_text_folders
from pixart.vae import VAE

logger = logging.getLogger(__name__)

# ---- the pipeline ------------------------------------------------------------------------------------------------


class Text2Image:
    """PixArt-Σ text-to-image. Build with `from_pretrained` (lazy loading) or from loaded components."""

    def __init__(
        self,
        transformer: torch.nn.Module | None = None,
        vae: VAE | torch.nn.Module | None = None,
        text_encoder: TextEncoder | None = None,
        *,
        sources: ModelSources | None = None,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        offload: bool = False,
        keep_text_encoder: bool | None = None,
        schedule: dict | None = None,
        name: str | None = None,
        checkpoint_options: dict | None = None,
    ):
        self.device = resolve_device(str(device) if device is not None else None)
        self.dtype = dtype or default_dtype(self.device)
        if self.device.type == "cpu" and self.dtype == torch.float16:
            raise ValueError("--dtype fp16 is not supported on the CPU; use fp32 or bf16")
        self.offload = offload and self.device.type != "cpu"
        self.keep_text_encoder = keep_text_encoder
        self.sources = sources
        self.schedule = noise_schedule(schedule)
        self.name = name or (sources.name if sources else "pixart")
        self._transformer = transformer
        self._vae = VAE(vae) if vae is not None and not isinstance(vae, VAE) else vae
        self._text_encoder = text_encoder
        self._kv: tuple[tuple[int, ...], int, str] | None = None
        self._loras: list[tuple[tuple[dict, dict], float]] = []  # LoRA adapters waiting to be merged
        self._meta: tuple | None = None  # (config, parameter count) read from the checkpoint's header
        self._checkpoint_options = dict(checkpoint_options or {})  # preset= / config= for files without a config

    @classmethod
    def from_pretrained(
        cls,
        model: str | Path,
        *,
        text_encoder: str | Path | None = None,
        vae: str | Path | None = None,
        need_text_encoder: bool = True,
        preset: str | None = None,
        config=None,
        **kwargs,
    ) -> Text2Image:
        """A pipeline over a model folder or checkpoint (see `ModelSources.resolve`); nothing is loaded yet.

        Args:
            preset, config: for checkpoints that carry no config (official `.pth`): a `PRESETS` name or a
                `ModelConfig` for what the weights' shapes cannot tell (see `pixart.checkpoint`).
            **kwargs: `Text2Image` options (device, dtype, offload, keep_text_encoder).
        """
        sources = ModelSources.resolve(model, text_encoder=text_encoder, vae=vae, need_text_encoder=need_text_encoder)
        schedule = read_noise_schedule(sources.scheduler) if sources.scheduler else None
        options = {k: v for k, v in (("preset", preset), ("config", config)) if v is not None}
        return cls(sources=sources, schedule=schedule, checkpoint_options=options, **kwargs)

    # ---- components, loaded on first use ------------------------------------------------------------------------

    @property
    def home(self) -> torch.device:
        """Where components wait: the CPU when offloading, else the compute device."""
        return torch.device("cpu") if self.offload else self.device

    @property
    def transformer(self) -> torch.nn.Module:
        if self._transformer is None:
            from pixart.checkpoint import load_transformer

            logger.info("loading transformer from %s", self.sources.transformer)
            self._transformer = load_transformer(
                self.sources.transformer, device=self.home, dtype=self.dtype, **self._checkpoint_options
            )
        if self._kv is not None:
            self._transformer.enable_kv_compression(*self._kv)
            self._kv = None
        for lora, scale in self._loras:
            from pixart.train.lora import merge_lora

            merge_lora(self._transformer, *lora, scale=scale)
        self._loras = []
        return self._transformer.eval()

    @property
    def vae(self) -> VAE:
        if self._vae is None:
            logger.info("loading VAE from %s", self.sources.vae)
            self._vae = VAE.from_folder(self.sources.vae, device=self.home, dtype=self.dtype)
        return self._vae

    @property
    def text_encoder(self) -> TextEncoder:
        if self._text_encoder is None:
            if self.sources is None or self.sources.text_encoder is None:
                raise ValueError("this pipeline has no text encoder: pass prompt embeddings instead")
            logger.info("loading text encoder from %s", self.sources.text_encoder)
            self._text_encoder = TextEncoder.from_folder(
                self.sources.text_encoder, max_length=self.model_config.max_tokens, device=self.home, dtype=self.dtype
            )
        return self._text_encoder

    def release_text_encoder(self) -> None:
        """Free T5 (it is reloaded if needed again)."""
        if self._text_encoder is not None and self.sources is not None and self.sources.text_encoder is not None:
            self._text_encoder = None
            _empty_cache(self.device)

    @property
    def model_config(self):
        """The transformer's `ModelConfig`, read from the checkpoint header if the weights are not loaded."""
        if self._transformer is not None:
            return self._transformer.cfg
        return self._checkpoint_meta()[0]

    def _checkpoint_meta(self) -> tuple:
        if self._meta is None:
            from pixart.checkpoint import read_checkpoint

            cfg, sd, _ = read_checkpoint(self.sources.transformer, meta=True, **self._checkpoint_options)
            self._meta = (cfg, sum(t.numel() for t in sd.values()))
        return self._meta

    def sampling_schedule(self) -> dict:
        """The noise schedule samplers get: the pipeline's, with the prediction type of the transformer.

        A v-prediction transformer says so in its config (our checkpoints' metadata, or the `prediction_type` we
        add to a diffusers transformer's config.json); diffusers-layout folders say it in the scheduler config,
        which is what `self.schedule` holds. Either marks the model as v-prediction.
        """
        if self.model_config.prediction == "epsilon":
            return self.schedule
        return {**self.schedule, "prediction_type": SCHEDULER_PREDICTION[self.model_config.prediction]}

    @property
    def native_size(self) -> int:
        """Side of the model's native square image, in pixels."""
        return self.model_config.sample_size * 8

    def enable_kv_compression(self, layers: list[int] | None = None, factor: int = 2, sampling: str = "conv") -> None:
        """Training-free KV compression at inference (PixArt-Σ §3.3): keys/values of self-attention are
        downsampled `factor`x per side in `layers` (default: the second half of the blocks, as the paper)."""
        depth = self.model_config.depth
        layers = tuple(range(depth // 2, depth)) if layers is None else tuple(layers)
        bad = [i for i in layers if not 0 <= i < depth]
        if bad:
            raise ValueError(f"--kv-layers {bad}: this model has blocks 0..{depth - 1}")
        logger.warning(
            "KV compression on blocks %s (factor %d, %s): faster, lighter attention that costs some image quality, "
            "most for checkpoints not trained with it",
            _ranges(layers), factor, sampling,
        )  # fmt: skip
        self._kv = (layers, int(factor), sampling)
        if self._transformer is not None:
            self.transformer  # noqa: B018 (applies the pending setting)

    def add_lora(self, path: str | Path, scale: float = 1.0) -> None:
        """Merge a LoRA adapter file (written by `pixart train` with `lora.rank > 0`) into the transformer:
        W += scale * (alpha / rank) * B @ A. Read now (so a bad file fails early), merged when the
        transformer is loaded."""
        from pixart.train.lora import load_lora

        self._loras.append((load_lora(path), float(scale)))
        if self._transformer is not None:
            self.transformer  # noqa: B018 (merges now)

    @property
    def kv_compression(self) -> tuple[str, int, str] | None:
        """(blocks, factor, sampling) of the KV compression in effect or pending, None when off."""
        if self._kv is not None:
            layers, factor, sampling = self._kv
        else:
            cfg = self.model_config
            layers, factor, sampling = cfg.kv_compress_layers, cfg.kv_compress_factor, cfg.kv_compress_sampling
        return (_ranges(tuple(layers)), factor, sampling) if layers and factor > 1 else None

    @contextlib.contextmanager
    def _on_device(self, component):
        """With offloading, move a component to the compute device for the duration of one step."""
        if not self.offload:
            yield component
            return
        component.to(self.device)
        try:
            yield component
        finally:
            component.to("cpu")
            _empty_cache(self.device)

    # ---- memory --------------------------------------------------------------------------------------------------

    def estimate_memory(
        self, width: int, height: int, *, batch: int = 1, guided: bool = True, encode: bool = True,
        tile_vae: bool | None = None, tile_size: int | None = None,
    ) -> MemoryEstimate:  # fmt: skip
        """Peak memory of `generate` for these settings (see `pixart.memory`); reads headers, loads nothing."""
        cfg = self.model_config
        vae_cfg = self._vae_config()
        default_tile = vae_cfg.get("sample_size", 1024)
        default_tile = default_tile[0] if isinstance(default_tile, (list, tuple)) else default_tile
        kv_layers, kv_factor, _ = self._kv or (cfg.kv_compress_layers, cfg.kv_compress_factor, None)
        upcast_vae = self.dtype == torch.float16 and vae_cfg.get("force_upcast", False)
        vae_bytes = 4 if upcast_vae else self.dtype.itemsize
        available = available_memory(str(self.device)) + self._bytes_on_device()
        if tile_vae is None:  # as `VAE.should_tile` will decide, with the transformer's weights still resident
            untiled = decode_bytes(height, width, vae_dtype_bytes=vae_bytes, batch=batch)
            resident = 0 if self.offload else self._parameter_count("transformer") * self.dtype.itemsize
            tile_vae = max(height, width) > default_tile and untiled > AUTO_TILE_FRACTION * (available - resident)
        return estimate_generation(
            device=str(self.device), available=available,
            height=height, width=width, batch=batch, guided=guided, dtype_bytes=self.dtype.itemsize,
            transformer_params=self._parameter_count("transformer"), hidden_size=cfg.hidden_size,
            num_heads=cfg.num_heads, patch_size=cfg.patch_size,
            kv_factor=kv_factor if len(kv_layers) == cfg.depth else 1,
            text_encoder_params=self._parameter_count("text_encoder") if encode else 0,
            text_encoder_resident=self._keeps_text_encoder(width, height), vae_params=self._parameter_count("vae"),
            vae_dtype_bytes=vae_bytes,
            vae_spatial=2 ** (len(vae_cfg.get("block_out_channels", [0] * 4)) - 1),
            tile=(tile_size or default_tile) if tile_vae else None, offload=self.offload,
            models_loaded_first=self._transformer is not None,
        )  # fmt: skip

    def _vae_config(self) -> dict:
        if self._vae is not None:
            return dict(self._vae.model.config)
        return json.loads((self.sources.vae / "config.json").read_text())

    def _loaded(self) -> dict[str, torch.nn.Module | None]:
        return {
            "transformer": self._transformer,
            "vae": self._vae.model if self._vae else None,
            "text_encoder": self._text_encoder.model if self._text_encoder else None,
        }

    def _parameter_count(self, part: str) -> int:
        module = self._loaded()[part]
        if module is not None:
            return sum(p.numel() for p in module.parameters())
        if part == "transformer":
            return self._checkpoint_meta()[1]
        if part == "vae":
            return count_parameters(self.sources.vae)
        if self.sources is None or self.sources.text_encoder is None:
            return 0
        return count_parameters(resolve_text_folders(self.sources.text_encoder)[1])

    def _bytes_on_device(self) -> int:
        """Weights already loaded on the compute device (the estimate counts them, so they count as free)."""
        total = 0
        for module in self._loaded().values():
            if module is not None and next(module.parameters()).device.type == self.device.type:
                total += sum(p.numel() * p.element_size() for p in module.parameters())
        return total

    # ---- 1. text -------------------------------------------------------------------------------------------------

    def _keeps_text_encoder(self, width: int | None = None, height: int | None = None) -> bool:
        """`keep_text_encoder`, or by default: keep T5 unless the image is larger than the native square."""
        if self.keep_text_encoder is not None:
            return self.keep_text_encoder
        native = self.native_size
        return width is None or height is None or width * height <= native * native

    @torch.no_grad()
    def encode(
        self, prompts: str | list[str], negative: str = "", *, width: int | None = None, height: int | None = None
    ) -> PromptEmbeddings:
        """Step 1: T5 features of the prompts and of the negative prompt (the CFG null branch).

        `width`/`height`: the image size they are for; T5 is then freed when the image is large (see the
        module docstring).
        """
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        with self._on_device(self.text_encoder) as te:
            embeds, mask = te.encode(prompts)  # (P, L, D), (P, L)
            null_embeds, null_mask = te.encode([negative])  # (1, L, D), (1, L)
        out = PromptEmbeddings(prompts, embeds.cpu(), mask.cpu(), negative, null_embeds.cpu(), null_mask.cpu())
        if not self._keeps_text_encoder(width, height):
            self.release_text_encoder()
        return out

    # ---- generation ----------------------------------------------------------------------------------------------

    @torch.no_grad()
    def generate(
        self,
        prompt: str | list[str] | PromptEmbeddings,
        *,
        negative: str = "",
        width: int | None = None,
        height: int | None = None,
        steps: int | None = None,
        cfg: float | None = None,
        sampler: str = "dpm-solver++",
        num_images: int = 1,
        seed: int | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        cfg_semantics: str = "diffusers",
        latents: Tensor | None = None,
        tile_vae: bool | None = None,
        tile_size: int | None = None,
        output: str = "pil",
        check_memory: bool = True,
        callback=None,
    ):
        """Generate `num_images` images per prompt.

        Args:
            prompt: text, a list of texts, or precomputed `PromptEmbeddings` (then `negative` is theirs).
            width, height: pixels, multiples of 16; the model's native square size by default.
            steps, cfg: the sampler's defaults when None (`pixart.diffusion.SAMPLERS`); cfg 1 = no guidance.
            sampler: dpm-solver++ | sa-solver | ddim | euler | iddpm.
            seed: image i uses a generator seeded `seed + i` (random seed when None and no `generator`).
            generator: instead of `seed`: one generator per image, or one for the whole batch (diffusers-style).
            cfg_semantics: "diffusers" (the negative's own mask) or "official" (the prompt's mask).
            latents: initial noise (B, C, h, w) instead of drawing it.
            tile_vae: force tiled (True) or untiled (False) decoding; None tiles when untiled would not fit.
            output: "pil" (list of images), "pt" ((B, 3, H, W) in [0, 1]) or "latent".
            callback: `callback(step, timestep, latents)` after each sampler step.
        """
        # 1. Check the inputs and fill in the sampler's and the model's defaults.
        spec = get_sampler(sampler)
        steps = spec.steps if steps is None else steps
        cfg = spec.cfg if cfg is None else float(cfg)
        if steps < 1:
            raise ValueError(f"steps={steps}: must be >= 1")
        if not cfg >= 0 or cfg == float("inf"):
            raise ValueError(f"cfg={cfg}: must be a finite number >= 0")
        if num_images < 1:
            raise ValueError(f"num_images={num_images}: must be >= 1")
        if output not in ("pil", "pt", "latent"):
            raise ValueError(f"output={output!r}: allowed are pil, pt, latent")
        width = width or self.native_size
        height = height or self.native_size
        model_cfg = self.model_config
        check_size(width, height, multiple=8 * model_cfg.patch_size)
        precomputed = isinstance(prompt, PromptEmbeddings)
        n_prompts = len(prompt.prompts) if precomputed else (1 if isinstance(prompt, str) else len(prompt))
        batch = n_prompts * num_images
        guided = cfg != 1.0

        # 2. Refuse early when the estimated peak does not fit.
        if check_memory:
            self.estimate_memory(
                width, height, batch=batch, guided=guided, encode=not precomputed, tile_vae=tile_vae,
                tile_size=tile_size,
            ).check()  # fmt: skip

        # 3. Prompt features, repeated per image (prompt-major order).
        text = prompt if precomputed else self.encode(prompt, negative, width=width, height=height)
        text = text.select([p for p in range(n_prompts) for _ in range(num_images)])
        if text.channels != model_cfg.caption_channels:
            raise ValueError(
                f"prompt embeddings have {text.channels} channels but the model reads {model_cfg.caption_channels}"
            )
        dev = self.device
        null_embeds = text.negative_embeds.expand(batch, -1, -1)  # (B, L, D)
        null_mask = text.negative_mask.expand(batch, -1)  # (B, L)
        cond = Conditioning(
            text.embeds.to(dev, self.dtype), text.mask.to(dev), null_embeds.to(dev, self.dtype), null_mask.to(dev)
        )

        # 4. Initial noise: one generator per image.
        latent_shape = (batch, model_cfg.in_channels, height // 8, width // 8)
        if generator is None:
            if seed is None:
                seed = random.randrange(2**32)
                logger.info("seed %d", seed)
            generator = generators_for([seed + i for i in range(batch)])
        if latents is None:
            latents = initial_noise(latent_shape, generator, device=dev)
        elif tuple(latents.shape) != latent_shape:
            raise ValueError(f"latents of shape {tuple(latents.shape)}; expected {latent_shape}")

        # 5. Denoise.
        learned = model_cfg.learn_sigma and sampler == "iddpm"
        with self._on_device(self.transformer) as model:
            denoise = make_denoiser(
                model, cond, cfg, semantics=cfg_semantics, keep_variance=learned, image_size=(height, width)
            )
            latents = sample(
                denoise, latents.to(dev), sampler, steps, schedule=self.sampling_schedule(), learned_variance=learned,
                generators=generator, callback=callback,
            )  # fmt: skip
        if output == "latent":
            return latents

        # 6. Decode.
        images = self.decode(latents, tile_vae=tile_vae, tile_size=tile_size)  # (B, 3, H, W) in [0, 1]

        # 7. Convert.
        return images.cpu() if output == "pt" else to_pil(images)

    @torch.no_grad()
    def decode(self, latents: Tensor, *, tile_vae: bool | None = None, tile_size: int | None = None) -> Tensor:
        """Scaled latents (B, C, h, w), as `generate(output="latent")` returns them -> images (B, 3, H, W) in
        [0, 1]. Memory the denoising freed is returned to the system first."""
        _empty_cache(self.device)
        with self._on_device(self.vae) as vae:
            images = vae.decode(latents, tile=tile_vae, tile_size=tile_size)  # (B, 3, H, W) in [-1, 1]
        return (images / 2 + 0.5).clamp(0, 1)


def to_pil(images: Tensor) -> list:
    """(B, 3, H, W) floats in [0, 1] -> PIL images (rounded to 8 bits, as diffusers does)."""
    from PIL import Image

    arrays = (images.permute(0, 2, 3, 1).float().cpu().numpy() * 255).round().astype("uint8")
    return [Image.fromarray(a) for a in arrays]


def _empty_cache(device: torch.device) -> None:
    """Hand memory freed by a finished stage back to the system before the next stage allocates its own."""
    import gc

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps":
        torch.mps.empty_cache()
    else:
        _malloc_trim()


def _malloc_trim() -> None:
    """glibc keeps freed heap blocks for reuse; trimming returns them, so the VAE decoder's large buffers come
    on top of what is live, not on top of the transformer's freed activations (a lower peak RSS on CPU).
    A no-op where the C library is not glibc."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _ranges(indices: tuple[int, ...]) -> str:
    """(14, 15, 16, 20) -> '14-16,20'."""
    out, run = [], []
    for i in sorted(indices):
        if run and i != run[-1] + 1:
            out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
            run = []
        run.append(i)
    if run:
        out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ",".join(out) or "none"
