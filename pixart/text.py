"""The T5 text encoder: tokenize to a fixed length, encode, keep the attention mask; prompt-embedding files.

PixArt-Σ reads T5 v1.1 XXL encoder features of captions padded to 300 tokens (REFERENCE.md §1.6); the
attention mask is kept and becomes the transformer's cross-attention mask. Longer prompts are truncated,
with a warning that says how many tokens were cut.

transformers 5 builds a T5 tokenizer with a placeholder vocabulary (special tokens only) when the folder has
no usable `spiece.model`/`tokenizer.json`, without an error; every prompt then becomes <unk> tokens and the
images are garbage. `load_tokenizer` checks that a vocabulary really loaded.

`PromptEmbeddings` lets the 4.7B-parameter encoder run once: encode, save to safetensors, free the encoder,
and generate from the file as often as wanted.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

logger = logging.getLogger(__name__)

DEFAULT_MAX_LENGTH = 300
_PROBE = "a photo of a cat"
_FORMAT = "pixart-prompt-embeddings/1"


# ---- loading -------------------------------------------------------------------------------------------------


def resolve_text_folders(path: str | Path) -> tuple[Path, Path]:
    """(tokenizer folder, encoder folder) for a T5 folder or a pipeline folder with tokenizer/ + text_encoder/."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"text encoder folder {str(path)!r} does not exist")
    if (path / "text_encoder").is_dir():
        tokenizer_dir = path / "tokenizer" if (path / "tokenizer").is_dir() else path / "text_encoder"
        return tokenizer_dir, path / "text_encoder"
    return path, path


def check_tokenizer(tokenizer, where: str | Path = "the tokenizer folder") -> None:
    """Fail if `tokenizer` has no real vocabulary (an ordinary English phrase becomes unknown tokens)."""
    ids = tokenizer(_PROBE, add_special_tokens=False).input_ids
    unk = tokenizer.unk_token_id
    specials = len(set(tokenizer.all_special_ids))
    if not ids or (unk is not None and unk in ids) or len(tokenizer) <= specials + 1:
        raise ValueError(
            f"tokenizer in {str(where)!r} has no usable vocabulary ({len(tokenizer)} tokens; {_PROBE!r} -> "
            f"{ids}): the folder needs T5's spiece.model or tokenizer.json"
        )


def load_tokenizer(folder: str | Path):
    """A T5 tokenizer from a local folder, checked to have loaded its vocabulary."""
    from transformers import AutoTokenizer

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"tokenizer folder {str(folder)!r} does not exist")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot load a tokenizer from {str(folder)!r}: {str(e).splitlines()[0]}") from None
    check_tokenizer(tokenizer, folder)
    return tokenizer


class TextEncoder:
    """T5 tokenizer + encoder: prompts -> (features (B, L, D), mask (B, L)), L = `max_length`."""

    def __init__(self, tokenizer, model: torch.nn.Module, max_length: int = DEFAULT_MAX_LENGTH):
        self.tokenizer = tokenizer
        self.model = model.eval()
        self.max_length = max_length

    @classmethod
    def from_folder(
        cls,
        path: str | Path,
        *,
        max_length: int = DEFAULT_MAX_LENGTH,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> TextEncoder:
        """Load from a T5 folder (tokenizer files + config.json + weights) or a pipeline folder."""
        from transformers import T5EncoderModel

        tokenizer_dir, encoder_dir = resolve_text_folders(path)
        if not (encoder_dir / "config.json").is_file():
            raise FileNotFoundError(f"text encoder folder {str(encoder_dir)!r} has no config.json")
        tokenizer = load_tokenizer(tokenizer_dir)
        model = T5EncoderModel.from_pretrained(str(encoder_dir), dtype=dtype, local_files_only=True)
        return cls(tokenizer, model.to(device), max_length)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def to(self, device: torch.device | str) -> TextEncoder:
        self.model.to(device)
        return self

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> tuple[Tensor, Tensor]:
        """Encode prompts, padded to `max_length` tokens.

        Returns:
            features (B, L, D) in the encoder's dtype, and the attention mask (B, L) int64 (1 = real token).
        """
        tokens = self.tokenizer(
            prompts,
            padding="max_length",
            max_length=self.max_length,
            truncation=True,
            add_special_tokens=True,
            return_tensors="pt",
        )
        self._warn_truncated(prompts)
        ids, mask = tokens.input_ids.to(self.device), tokens.attention_mask.to(self.device)
        features = self.model(input_ids=ids, attention_mask=mask)[0]  # (B, L, D)
        return features, mask

    def _warn_truncated(self, prompts: list[str]) -> None:
        full = self.tokenizer(prompts, add_special_tokens=True).input_ids
        for i, ids in enumerate(full):
            cut = len(ids) - self.max_length
            if cut > 0:
                lost = self.tokenizer.decode(ids[self.max_length - 1 : -1], skip_special_tokens=True)
                logger.warning(
                    "prompt %d is %d tokens; T5 reads %d, so its last %d tokens were cut: %r",
                    i, len(ids), self.max_length, cut, lost[:120] + ("..." if len(lost) > 120 else ""),
                )  # fmt: skip


# ---- precomputed embeddings ----------------------------------------------------------------------------------------


@dataclass
class PromptEmbeddings:
    """Encoded prompts and the negative prompt: what the transformer needs from the text encoder.

    Shapes: embeds (P, L, D), mask (P, L); negative_embeds (1, L, D), negative_mask (1, L).
    """

    prompts: list[str]
    embeds: Tensor
    mask: Tensor
    negative: str
    negative_embeds: Tensor
    negative_mask: Tensor

    def __post_init__(self) -> None:
        p, length = self.mask.shape
        if self.embeds.shape[:2] != (p, length) or len(self.prompts) != p:
            raise ValueError(
                f"inconsistent prompt embeddings: {len(self.prompts)} prompts, embeds {tuple(self.embeds.shape)}, "
                f"mask {tuple(self.mask.shape)}"
            )
        if self.negative_embeds.shape[0] != 1 or self.negative_mask.shape[0] != 1:
            raise ValueError("negative embeddings must have batch size 1")

    @property
    def channels(self) -> int:
        return self.embeds.shape[-1]

    def select(self, indices: list[int]) -> PromptEmbeddings:
        """The embeddings of a subset (or repetition) of the prompts, in the given order."""
        index = torch.tensor(indices, dtype=torch.long)
        return PromptEmbeddings(
            [self.prompts[i] for i in indices], self.embeds[index], self.mask[index],
            self.negative, self.negative_embeds, self.negative_mask,
        )  # fmt: skip

    def save(self, path: str | Path) -> None:
        """Write a safetensors file; prompts and the negative go in its metadata."""
        from safetensors.torch import save_file

        tensors = {
            "embeds": self.embeds, "mask": self.mask,
            "negative_embeds": self.negative_embeds, "negative_mask": self.negative_mask,
        }  # fmt: skip
        metadata = {"format": _FORMAT, "prompts": json.dumps(self.prompts), "negative": self.negative}
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(path), metadata=metadata)

    @classmethod
    def load(cls, path: str | Path) -> PromptEmbeddings:
        """Read a file written by `save`."""
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"embeddings file {str(path)!r} does not exist")
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
        except Exception as e:  # safetensors raises its own error types for malformed files
            raise ValueError(f"{str(path)!r} is not a safetensors embeddings file: {e}") from None
        if meta.get("format") != _FORMAT:
            raise ValueError(f"{str(path)!r} is not a pixart prompt-embeddings file (format {meta.get('format')!r})")
        return cls(
            json.loads(meta["prompts"]), tensors["embeds"], tensors["mask"],
            meta.get("negative", ""), tensors["negative_embeds"], tensors["negative_mask"],
        )  # fmt: skip
