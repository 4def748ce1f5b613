"""Training configuration: nested frozen dataclasses loaded from TOML or YAML, with `--set a.b=value` overrides.

Every key is checked against the dataclass fields and every value against the field's type before anything
starts, so a typo fails in the first second with the key's name, not after an hour of training.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class ModelSection:
    """Which transformer to train and how it starts."""

    preset: str = "PixArt-Sigma-XL-2-1024-MS"  # a name from pixart.config.PRESETS ...
    config: dict = field(default_factory=dict)  # ... with these ModelConfig fields overridden
    init_from: str = ""  # checkpoint to start from (any format load_transformer reads); "" = from scratch
    sample_size: int = 0  # weak-to-strong "resolution up": new native latent size (0 = keep)
    pe_interpolation: float = 0.0  # ... and its positional-embedding scale (0 = keep)
    kv_compress_layers: list[int] = field(default_factory=list)  # weak-to-strong "KV on" (empty = keep)
    kv_compress_factor: int = 2
    kv_compress_sampling: str = "conv"
    gradient_checkpointing: bool = False


@dataclass(frozen=True)
class DataSection:
    """Where samples come from: a feature cache (`pixart prepare`) or raw images + captions."""

    cache: str = ""  # a `pixart prepare` cache directory (preferred: no T5/VAE in the loop)
    mix: list[str] = field(default_factory=list)  # more caches trained on with `cache`, as one dataset
    mix_repeats: list[int] = field(default_factory=list)  # times each `mix` cache appears an epoch (default 1)
    path: str = ""  # raw data: a folder of images + .txt captions, or a .jsonl/.csv manifest
    text_encoder: str = ""  # T5 folder, for raw data and validation prompts
    vae: str = ""  # AutoencoderKL folder, for raw data and validation images
    resolution: int = 1024  # aspect-ratio bin table (256, 512, 1024, 2048, 2880) of the buckets
    multi_scale: bool = True  # aspect-ratio buckets; False = one square bucket at `resolution`
    long_caption_ratio: float = 0.5  # probability of using the long caption when a sample has one
    max_tokens: int = 300
    num_workers: int = 0  # processes assembling batches ahead of the loop (pixart.train.batches); 0 = the loop's own


@dataclass(frozen=True)
class OptimSection:
    name: str = "adamw"  # adamw | came
    lr: float = 2e-5
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # CAME takes three
    eps: list[float] = field(default_factory=lambda: [1e-8])  # CAME takes two
    warmup_steps: int = 1000
    # After warmup the lr is constant (the reference), or, with "linear" / "cosine", held at its peak and then
    # brought down over the run's last `decay_steps` steps (0 = every step after warmup) to `min_lr_ratio` x peak.
    decay: str = "none"  # none | linear | cosine
    decay_steps: int = 0
    min_lr_ratio: float = 0.0
    sqrt_lr_scaling: bool = True  # lr *= sqrt(global_batch / 256), the reference's auto_lr
    grad_clip: float = 0.01


@dataclass(frozen=True)
class ValidationSection:
    every: int = 0  # steps between validation images (0 = only at the start and the end)
    prompts: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=lambda: [0])
    sampler: str = "dpm-solver++"
    steps: int = 14
    cfg: float = 4.5
    size: list[int] = field(default_factory=list)  # [width, height]; empty = the model's native square


@dataclass(frozen=True)
class LoraSection:
    rank: int = 0  # 0 = train the full model; > 0 = freeze it and train LoRA adapters of this rank
    alpha: float = 0.0  # 0 = same as rank
    targets: list[str] = field(default_factory=list)  # module-name suffixes; empty = pixart.train.lora defaults


@dataclass(frozen=True)
class TrainConfig:
    output_dir: str = "runs/train"
    seed: int = 0
    max_steps: int = 1000
    batch_size: int = 8  # global batch per optimizer step (all processes, all accumulation steps)
    grad_accum: int = 1
    mixed_precision: str = "no"  # no | fp16 | bf16
    ema_decay: float = 0.0  # 0 = no EMA
    compile: bool = False  # torch.compile the transformer
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    log_every: int = 10
    snr_gamma: float = 0.0  # > 0: min-SNR-γ weighting of the MSE (e.g. 5); 0 = unweighted, as the reference
    # > 0: latent cells near what differs from the image's flat background weigh 1 + this in the MSE (the others 1;
    # pixart.diffusion.losses.foreground_weights); 0 = unweighted, as the reference.
    foreground_weight: float = 0.0
    foreground_threshold: float = 2.0  # L2 distance from the per-channel median that marks a cell as foreground
    # How training timesteps are drawn: "uniform" over [0, T) as the reference, or "logit_normal", SD3's density
    # t = T·sigmoid(z), z ~ N(timestep_logit_mean, timestep_logit_std): a mean > 0 spends more steps at high noise.
    timestep_sampling: str = "uniform"
    timestep_logit_mean: float = 0.0
    timestep_logit_std: float = 1.0
    # Then this fraction of the batch (0 = none) has its t redrawn uniformly from [timestep_high_from, T): the
    # steps where the noisy latent shows nothing and the layout must come from the caption alone.
    timestep_high_fraction: float = 0.0
    timestep_high_from: int = 900
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    validation: ValidationSection = field(default_factory=ValidationSection)
    lora: LoraSection = field(default_factory=LoraSection)

    def validate(self) -> None:
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise ValueError(message)

        need(self.max_steps >= 1, f"max_steps={self.max_steps}: must be >= 1")
        need(self.batch_size >= 1, f"batch_size={self.batch_size}: must be >= 1")
        need(self.grad_accum >= 1, f"grad_accum={self.grad_accum}: must be >= 1")
        need(
            self.batch_size % self.grad_accum == 0,
            f"batch_size={self.batch_size} must be divisible by grad_accum={self.grad_accum}",
        )
        need(
            self.mixed_precision in ("no", "fp16", "bf16"),
            f"mixed_precision={self.mixed_precision!r}: allowed are no, fp16, bf16",
        )
        need(0.0 <= self.ema_decay < 1.0, f"ema_decay={self.ema_decay}: must be in [0, 1)")
        need(self.snr_gamma >= 0, f"snr_gamma={self.snr_gamma}: must be >= 0 (0 = off)")
        need(self.foreground_weight >= 0, f"foreground_weight={self.foreground_weight}: must be >= 0 (0 = off)")
        need(self.foreground_threshold > 0, f"foreground_threshold={self.foreground_threshold}: must be > 0")
        need(
            self.timestep_sampling in ("uniform", "logit_normal"),
            f"timestep_sampling={self.timestep_sampling!r}: allowed are uniform, logit_normal",
        )
        need(self.timestep_logit_std > 0, f"timestep_logit_std={self.timestep_logit_std}: must be > 0")
        need(
            0.0 <= self.timestep_high_fraction <= 1.0,
            f"timestep_high_fraction={self.timestep_high_fraction}: must be in [0, 1]",
        )
        need(
            0 <= self.timestep_high_from <= 999,
            f"timestep_high_from={self.timestep_high_from}: must be in [0, 999]",
        )
        need(self.checkpoint_every >= 1, f"checkpoint_every={self.checkpoint_every}: must be >= 1")
        need(self.data.num_workers >= 0, f"data.num_workers={self.data.num_workers}: must be >= 0 (0 = no workers)")
        need(self.keep_checkpoints >= 1, f"keep_checkpoints={self.keep_checkpoints}: must be >= 1")
        need(self.optim.name in ("adamw", "came"), f"optim.name={self.optim.name!r}: allowed are adamw, came")
        need(self.optim.lr > 0, f"optim.lr={self.optim.lr}: must be > 0")
        need(
            self.optim.decay in ("none", "linear", "cosine"),
            f"optim.decay={self.optim.decay!r}: allowed are none, linear, cosine",
        )
        need(self.optim.decay_steps >= 0, f"optim.decay_steps={self.optim.decay_steps}: must be >= 0 (0 = all)")
        need(
            0.0 <= self.optim.min_lr_ratio <= 1.0,
            f"optim.min_lr_ratio={self.optim.min_lr_ratio}: must be in [0, 1]",
        )
        need(
            bool(self.data.cache) != bool(self.data.path),
            "set exactly one of data.cache (a `pixart prepare` cache) and data.path (raw images + captions)",
        )
        need(not self.data.mix or bool(self.data.cache), "data.mix needs data.cache: it mixes caches, not raw data")
        need(
            not self.data.mix_repeats or len(self.data.mix_repeats) == len(self.data.mix),
            f"data.mix_repeats={self.data.mix_repeats}: needs one count per data.mix cache ({len(self.data.mix)})",
        )
        need(
            all(r >= 1 for r in self.data.mix_repeats),
            f"data.mix_repeats={self.data.mix_repeats}: every count must be >= 1",
        )
        need(
            0.0 <= self.data.long_caption_ratio <= 1.0,
            f"data.long_caption_ratio={self.data.long_caption_ratio}: must be in [0, 1]",
        )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ---- loading -------------------------------------------------------------------------------------------------------


def _check_type(value, annotation, key: str):
    """Return `value` converted to `annotation` (ints to floats, lists to lists), or raise naming `key`."""
    origin = typing.get_origin(annotation)
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation in (int, float, str, bool):
        if type(value) is not annotation:
            raise ValueError(f"{key}={value!r}: expected {annotation.__name__}, got {type(value).__name__}")
        return value
    if origin is list:
        (item,) = typing.get_args(annotation)
        if not isinstance(value, list):
            raise ValueError(f"{key}={value!r}: expected a list of {item.__name__}")
        return [_check_type(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if annotation is dict or origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{key}={value!r}: expected a table/mapping")
        return dict(value)
    if isinstance(annotation, types.UnionType):
        raise TypeError(f"unsupported config annotation {annotation} for {key}")
    return value


def from_dict(cls, data: dict, prefix: str = ""):
    """Build the dataclass `cls` from nested dicts, rejecting unknown keys and wrong types."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"unknown config key {prefix + unknown[0]!r}; allowed in this section: {sorted(names)}")
    kwargs = {}
    for name, value in data.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, dict):
                raise ValueError(f"{prefix + name}: expected a section (table), got {value!r}")
            kwargs[name] = from_dict(hint, value, f"{prefix}{name}.")
        else:
            kwargs[name] = _check_type(value, hint, prefix + name)
    return cls(**kwargs)


def _parse_value(text: str):
    """A `--set` value: JSON when it parses (numbers, booleans, lists), else the plain string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply `a.b=value` strings to a nested dict (copy); values are parsed as JSON when possible."""
    data = json.loads(json.dumps(data))
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set {item!r}: expected key=value, e.g. optim.lr=1e-4")
        *parents, leaf = key.split(".")
        node = data
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"--set {item!r}: {part!r} is not a section")
        node[leaf] = _parse_value(value)
    return data


def read_config_file(path: str | Path) -> dict:
    """A TOML (.toml) or YAML (.yaml/.yml) file as a dict."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {str(path)!r} does not exist")
    text = path.read_text()
    if path.suffix == ".toml":
        try:
            import tomllib
        except ModuleNotFoundError:  # Python 3.10
            import tomli as tomllib
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ValueError(f"{path}: invalid TOML: {e}") from None
    if path.suffix in (".yaml", ".yml"):
        import yaml

        try:
            return yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            raise ValueError(f"{path}: invalid YAML: {str(e).splitlines()[0]}") from None
    raise ValueError(f"config file {str(path)!r}: unknown format; use .toml, .yaml or .yml")


def load_train_config(path: str | Path | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """Read, override, type-check and validate a training config."""
    data = read_config_file(path) if path else {}
    data = apply_overrides(data, overrides or [])
    cfg = from_dict(TrainConfig, data)
    cfg.validate()
    return cfg
