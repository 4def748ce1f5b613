"""Where a model's components are (folders and files) and where they run (device, dtype).

Published PixArt-Σ pipelines are diffusers-layout folders: `model_index.json`, `transformer/`, `text_encoder/`,
`tokenizer/`, `vae/`, `scheduler/`. A bare transformer checkpoint (official `.pth`, our `.safetensors`, a
diffusers transformer folder) needs the T5 and VAE folders named separately. `ModelSources.resolve` checks
every path before anything is loaded, so a missing component is one clear error, not a half-started run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from pixart.text import resolve_text_folders
from pixart.vae import resolve_vae_folder

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
PIPELINE_LAYOUT = "transformer/, text_encoder/, tokenizer/, vae/ (and scheduler/)"


# ---- devices ---------------------------------------------------------------------------------------------------


def resolve_device(name: str | None = None) -> torch.device:
    """`auto`/None -> cuda, else mps, else cpu; an explicit device must be available."""
    if name in (None, "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available here; use cpu or auto")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"--device {name}: MPS is not available here; use cpu or auto")
    return device


def default_dtype(device: torch.device) -> torch.dtype:
    """float32 on CPU; bfloat16 on GPUs that have it, else float16."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float16 if device.type == "mps" else torch.float32


# ---- where the components are -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSources:
    """Paths of a model's components: transformer checkpoint, T5 folder (None when prompts come
    precomputed), VAE folder, scheduler folder (None: PixArt-Σ's noise schedule), and a display name."""

    transformer: Path
    text_encoder: Path | None
    vae: Path
    scheduler: Path | None
    name: str

    @classmethod
    def resolve(
        cls,
        model: str | Path,
        *,
        text_encoder: str | Path | None = None,
        vae: str | Path | None = None,
        need_text_encoder: bool = True,
    ) -> ModelSources:
        """The components of (a) a pipeline folder or (b) a transformer checkpoint plus `text_encoder` and
        `vae` folders. Explicit `text_encoder`/`vae` replace a pipeline folder's own."""
        path = Path(model)
        if not path.exists():
            raise FileNotFoundError(
                f"model {str(path)!r} does not exist; pass a diffusers-layout PixArt-Σ folder or a "
                ".pth/.safetensors checkpoint with --text-encoder and --vae"
            )
        is_pipeline = path.is_dir() and ((path / "model_index.json").is_file() or (path / "transformer").is_dir())
        if is_pipeline:
            needed = {"transformer": ""}
            if vae is None:
                needed["vae"] = " or pass --vae DIR"
            if text_encoder is None and need_text_encoder:
                needed.update(text_encoder=" or pass --text-encoder DIR", tokenizer=" or pass --text-encoder DIR")
            for part, hint in needed.items():
                if not (path / part).is_dir():
                    raise FileNotFoundError(
                        f"model folder {str(path)!r} has no {part}/; a PixArt-Σ pipeline folder has "
                        f"{PIPELINE_LAYOUT}{hint}"
                    )
            transformer = path / "transformer"
            vae = vae or path / "vae"
            if need_text_encoder:
                text_encoder = text_encoder or path
            scheduler = path / "scheduler" if (path / "scheduler").is_dir() else None
        else:
            transformer, scheduler = path, None
            missing = [flag for flag, given in (("--text-encoder DIR", text_encoder or not need_text_encoder),
                                                ("--vae DIR", vae)) if not given]  # fmt: skip
            if missing:
                raise ValueError(
                    f"model {str(path)!r} is a transformer checkpoint only: pass {' and '.join(missing)} "
                    "(T5 and SDXL-VAE folders, e.g. a PixArt-Σ pipeline folder)"
                )
        if text_encoder is not None:
            resolve_text_folders(text_encoder)  # fails now if the folder is missing
        name = path.name if path.is_dir() else path.stem
        return cls(transformer, Path(text_encoder) if text_encoder else None, resolve_vae_folder(vae), scheduler, name)
