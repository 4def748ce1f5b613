"""The demo tokenizer: a sentencepiece unigram model trained on emoji captions, saved as a T5 tokenizer folder.

Laid out like T5's (pad=0, eos=1, unk=2, no bos; nmt_nfkc; `extra_ids` sentinels `<extra_id_k>` appended after the
pieces in reverse order, `<extra_id_0>` last) and saved as T5Tokenizer saves the real T5-XXL's folder:
`spiece.model`, `tokenizer_config.json`, `special_tokens_map.json`, so one code path (`pixart.text`) loads both.
Every corpus word gets a whole-word piece (`add_word_pieces`). Trained by `pixart.demo.text_encoder`.
"""

from __future__ import annotations

import io
import json
import logging
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from transformers import T5Tokenizer

from pixart.data.emoji_vocab import PALETTE, POSITIONS, SIZE_FRACTIONS, VOCABULARY

logger = logging.getLogger(__name__)

PAD_ID, EOS_ID, UNK_ID = 0, 1, 2  # T5's sentencepiece layout


def vocabulary_lines() -> list[str]:
    """Every caption word in every form, so the tokenizer keeps whole-word pieces for rare emoji too."""
    words = [e.name for e in VOCABULARY] + [e.plural_name for e in VOCABULARY]
    words += list(PALETTE) + list(POSITIONS) + list(SIZE_FRACTIONS) + ["medium-sized", "a", "an", "two", "three"]
    return words + [" ".join(words), "0123456789 abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ .,;:!?'\"-()"]


def train_tokenizer(
    texts: Iterable[str], out_dir: str | Path, vocab_size: int, extra_ids: int = 100, model_max_length: int = 300
) -> Path:
    """Train a T5-layout sentencepiece unigram model on `texts` and save it as a T5Tokenizer folder.

    Args:
        texts: training sentences.
        out_dir: folder to write (spiece.model, tokenizer_config.json, special_tokens_map.json).
        vocab_size: sentencepiece pieces, an upper bound (hard_vocab_limit off: a small corpus yields fewer).
        extra_ids: number of `<extra_id_k>` sentinels appended after the pieces (T5: 100).
        model_max_length: recorded in tokenizer_config.json.
    Returns:
        out_dir as a Path.
    """
    import sentencepiece as spm

    texts = list(texts)
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts),
        model_writer=model,
        model_type="unigram",
        vocab_size=vocab_size,
        hard_vocab_limit=False,
        character_coverage=1.0,
        normalization_rule_name="nmt_nfkc",
        pad_id=PAD_ID,
        eos_id=EOS_ID,
        unk_id=UNK_ID,
        bos_id=-1,
        pad_piece="<pad>",
        eos_piece="</s>",
        unk_piece="<unk>",
        num_threads=1,
        shuffle_input_sentence=False,
        minloglevel=2,
    )
    proto = add_word_pieces(model.getvalue(), texts)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "spiece.model").write_bytes(proto)
    n_pieces = spm.SentencePieceProcessor(model_proto=proto).get_piece_size()
    write_t5_tokenizer_config(out, n_pieces, extra_ids, model_max_length)
    logger.info("tokenizer: %d sentencepiece pieces + %d sentinels -> %s", n_pieces, extra_ids, out)
    return out


def add_word_pieces(proto: bytes, texts: Iterable[str], fallback_penalty: float = 10.0) -> bytes:
    """Give every corpus word a whole-word piece `▁word` scored by its unigram log-frequency.

    On this tiny, repetitive corpus the unigram trainer stops at ~440 pieces and keeps odd splits ("▁" + "on",
    "▁ab" + "ove"); captions should instead be one token per word, as T5's 32k vocabulary makes them for
    English. The trained pieces stay as the fallback for unseen words, their scores lowered by
    `fallback_penalty` so that a known word is never split (any split path costs more than one word piece).
    """
    from sentencepiece import sentencepiece_model_pb2 as pb

    counts: dict[str, int] = {}
    for text in texts:
        for word in text.split():
            word = word.strip(".,;:!?\"'()")
            if word:
                counts[word] = counts.get(word, 0) + 1
    total = sum(counts.values())
    m = pb.ModelProto()
    m.ParseFromString(proto)
    index = {p.piece: p for p in m.pieces}
    for p in m.pieces:
        if p.type == pb.ModelProto.SentencePiece.NORMAL:
            p.score -= fallback_penalty
    for word, count in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        piece = index.get("\u2581" + word) or m.pieces.add(
            piece="\u2581" + word, type=pb.ModelProto.SentencePiece.NORMAL
        )
        piece.score = math.log(count / total)
    m.trainer_spec.vocab_size = len(m.pieces)
    return m.SerializeToString()


def write_t5_tokenizer_config(out: Path, n_pieces: int, extra_ids: int, model_max_length: int) -> None:
    """The two JSON files T5Tokenizer writes next to spiece.model (the layout of PixArt's T5-XXL folder).

    `added_tokens_decoder` pins every special id, so transformers 4 (slow, sentinel k = size - 1 - k) and
    transformers 5 (tokenizers backend) assign the same ids.
    """
    sentinels = [f"<extra_id_{k}>" for k in range(extra_ids)]

    def entry(content: str) -> dict[str, Any]:
        return {"content": content, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False,
                "special": True}  # fmt: skip

    decoder = {str(PAD_ID): entry("<pad>"), str(EOS_ID): entry("</s>"), str(UNK_ID): entry("<unk>")}
    decoder.update({str(n_pieces + extra_ids - 1 - k): entry(s) for k, s in enumerate(sentinels)})
    config = {
        "added_tokens_decoder": dict(sorted(decoder.items(), key=lambda kv: int(kv[0]))),
        "additional_special_tokens": sentinels,
        "clean_up_tokenization_spaces": True,
        "eos_token": "</s>",
        "extra_ids": extra_ids,
        "legacy": True,
        "model_max_length": model_max_length,
        "pad_token": "<pad>",
        "sp_model_kwargs": {},
        "tokenizer_class": "T5Tokenizer",
        "unk_token": "<unk>",
    }
    special = {"additional_special_tokens": sentinels, "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    (out / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")


def load_tokenizer(path: str | Path) -> T5Tokenizer:
    """Load a tokenizer folder and check it holds the sentencepiece vocabulary (transformers 5 can silently fall
    back to a specials-only tokenizer when it cannot convert spiece.model)."""
    import sentencepiece as spm

    tok = T5Tokenizer.from_pretrained(str(path))
    n_pieces = spm.SentencePieceProcessor(model_file=str(Path(path) / "spiece.model")).get_piece_size()
    ids = tok("a cat on a blue background").input_ids
    if len(tok) < n_pieces or UNK_ID in ids:
        pieces = tok.convert_ids_to_tokens(ids)
        raise ValueError(f"tokenizer at {path} lost its vocabulary: {len(tok)} tokens for {n_pieces} pieces; {pieces}")
    return tok


def sentinel_ids(tok: T5Tokenizer, n: int) -> list[int]:
    """Ids of <extra_id_0> .. <extra_id_{n-1}>."""
    return [tok.convert_tokens_to_ids(f"<extra_id_{k}>") for k in range(n)]
