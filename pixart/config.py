"""Model configuration: one frozen dataclass and the named presets of every released checkpoint.

The config is the model's whole interface: `PixArtSigma(cfg)` builds it, checkpoints store it as JSON next to
the weights, and `pixart info` prints it. Presets are named exactly as the released checkpoints
(REFERENCE.md §1.10), so `--model PixArt-Sigma-XL-2-1024-MS` means what a user expects.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

KV_SAMPLINGS = ("conv", "ave", "uniform", "uniform_every")
PREDICTIONS = ("epsilon", "v")  # what the first in_channels outputs are: the noise ε, or v (Salimans & Ho 2022)
# The same, as diffusers schedulers' `prediction_type` names them.
SCHEDULER_PREDICTION = {"epsilon": "epsilon", "v": "v_prediction"}


@dataclass(frozen=True)
class ModelConfig:
    """Shape and behaviour of a PixArt-Σ transformer.

    Sizes are in latent pixels: `sample_size` is the latent side of the native square resolution
    (image side / 8), so the positional-embedding `base_size` is `sample_size // patch_size`.
    """

    depth: int = 28
    hidden_size: int = 1152
    num_heads: int = 16
    patch_size: int = 2
    in_channels: int = 4
    learn_sigma: bool = True  # predict the learned-range variance too: out_channels = 2 * in_channels
    mlp_ratio: float = 4.0
    caption_channels: int = 4096  # T5-XXL width
    max_tokens: int = 300  # caption length; rows of the null-caption embedding
    sample_size: int = 128  # latent side of the native resolution (1024 px / 8)
    pe_interpolation: float = 2.0  # "lewei scale": native image side / 512
    micro_condition: bool = False  # PixArt-α 1024-MS resolution/aspect-ratio embedders
    class_dropout_prob: float = 0.1  # caption dropout to the null embedding during training
    kv_compress_layers: tuple[int, ...] = field(default_factory=tuple)  # block indices with compressed K/V
    kv_compress_factor: int = 1  # spatial stride of the compression (2 in the paper: 4x fewer keys)
    kv_compress_sampling: str = "conv"  # conv | ave | uniform | uniform_every
    prediction: str = "epsilon"  # training target: "epsilon" (every released model) or "v"

    def __post_init__(self) -> None:
        # Accept lists from JSON and normalise them, so equal configs compare equal.
        object.__setattr__(self, "kv_compress_layers", tuple(int(i) for i in self.kv_compress_layers))
        self.validate()

    # ---- derived quantities -------------------------------------------------------------------------------

    @property
    def out_channels(self) -> int:
        return self.in_channels * 2 if self.learn_sigma else self.in_channels

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def base_size(self) -> int:
        """Token-grid side the positional embedding is anchored to."""
        return self.sample_size // self.patch_size

    @property
    def native_image_size(self) -> int:
        return self.sample_size * 8

    def kv_factor(self, block_index: int) -> int:
        """The K/V compression stride of one block (1 = uncompressed)."""
        return self.kv_compress_factor if block_index in self.kv_compress_layers else 1

    # ---- validation and (de)serialisation ------------------------------------------------------------------

    def validate(self) -> None:
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise ValueError(message)

        for name in (
            "depth",
            "hidden_size",
            "num_heads",
            "patch_size",
            "in_channels",
            "caption_channels",
            "max_tokens",
            "sample_size",
        ):
            value = getattr(self, name)
            need(isinstance(value, int) and value >= 1, f"{name}={value!r}: must be a positive integer")
        need(
            self.hidden_size % self.num_heads == 0,
            f"hidden_size={self.hidden_size} must be divisible by num_heads={self.num_heads}",
        )
        need(self.mlp_ratio > 0, f"mlp_ratio={self.mlp_ratio}: must be > 0")
        need(self.pe_interpolation > 0, f"pe_interpolation={self.pe_interpolation}: must be > 0")
        need(0.0 <= self.class_dropout_prob <= 1.0, f"class_dropout_prob={self.class_dropout_prob}: must be in [0, 1]")
        need(
            self.kv_compress_sampling in KV_SAMPLINGS,
            f"kv_compress_sampling={self.kv_compress_sampling!r}: allowed are {', '.join(KV_SAMPLINGS)}",
        )
        need(
            self.prediction in PREDICTIONS,
            f"prediction={self.prediction!r}: allowed are {', '.join(PREDICTIONS)}",
        )
        need(
            isinstance(self.kv_compress_factor, int) and self.kv_compress_factor >= 1,
            f"kv_compress_factor={self.kv_compress_factor!r}: must be an integer >= 1",
        )
        bad = [i for i in self.kv_compress_layers if not 0 <= i < self.depth]
        need(not bad, f"kv_compress_layers {bad} out of range: blocks are 0..{self.depth - 1}")
        need(
            len(set(self.kv_compress_layers)) == len(self.kv_compress_layers),
            f"kv_compress_layers={list(self.kv_compress_layers)} has duplicates",
        )

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["kv_compress_layers"] = list(self.kv_compress_layers)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown model config keys {unknown}; allowed: {sorted(known)}")
        return cls(**d)

    @classmethod
    def from_json(cls, text: str) -> ModelConfig:
        return cls.from_dict(json.loads(text))

    def replace(self, **changes) -> ModelConfig:
        return dataclasses.replace(self, **changes)


# ---- presets ------------------------------------------------------------------------------------------------

_XL2 = ModelConfig()
# The paper's KV-compressed layers: the last 14 of 28 blocks, 2x2 depthwise conv (REFERENCE.md §1.4).
_KV = {"kv_compress_layers": tuple(range(14, 28)), "kv_compress_factor": 2, "kv_compress_sampling": "conv"}

PRESETS: dict[str, ModelConfig] = {
    "PixArt-Sigma-XL-2-256x256": _XL2.replace(sample_size=32, pe_interpolation=0.5),
    "PixArt-Sigma-XL-2-512-MS": _XL2.replace(sample_size=64, pe_interpolation=1.0),
    "PixArt-Sigma-XL-2-1024-MS": _XL2.replace(sample_size=128, pe_interpolation=2.0),
    "PixArt-Sigma-XL-2-2K-MS": _XL2.replace(sample_size=256, pe_interpolation=4.0),
    "PixArt-Sigma-XL-2-1024-MS-KV": _XL2.replace(sample_size=128, pe_interpolation=2.0, **_KV),
    "PixArt-Sigma-XL-2-2K-MS-KV": _XL2.replace(sample_size=256, pe_interpolation=4.0, **_KV),
    # PixArt-α 1024-MS: same backbone, 120-token captions, resolution and aspect-ratio micro-conditions.
    "PixArt-XL-2-1024-MS": _XL2.replace(sample_size=128, pe_interpolation=2.0, max_tokens=120, micro_condition=True),
}


def get_preset(name: str) -> ModelConfig:
    """The config of a released checkpoint, by its released name."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; known presets: {', '.join(PRESETS)}") from None
