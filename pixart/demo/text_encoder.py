"""The demo text encoder: a sentencepiece tokenizer and a small T5 encoder, both trained here on emoji captions.

How it is made (one command, deterministic from `seed`):

1. Corpus: the short and the long caption of `corpus_scenes` emoji-world scenes (`pixart.data.emoji`, several
   aspect ratios), plus every vocabulary word in every form (names, plurals, colours, positions, sizes, numbers)
   so that rare emoji still get whole-word pieces.
2. Tokenizer: a sentencepiece unigram model laid out like T5's (pad=0, eos=1, unk=2, no bos; nmt_nfkc; `extra_ids`
   sentinels `<extra_id_k>` appended after the pieces in reverse order, `<extra_id_0>` last), saved as T5Tokenizer
   saves the real T5-XXL's folder: `spiece.model`, `tokenizer_config.json`, `special_tokens_map.json`
   (`pixart.demo.tokenizer`); or, with `--tokenizer DIR`, an existing one copied, so that a new encoder keeps the
   token ids of a model already trained.
3. Model: a `T5ForConditionalGeneration` in the T5 v1.1 style of PixArt's T5-XXL (gated-GELU, untied embeddings,
   relative position buckets, no dropout) with a 4-layer d_model=256 encoder and a 1-layer decoder, trained from
   scratch with T5's span-corruption objective (Raffel et al. 2020, sec. 3.1.4: 15% of tokens in spans of mean
   length 3 replaced by sentinels; the decoder predicts the dropped spans). The decoder is small on purpose: the
   encoder must carry the caption's content. AdamW, warm-up + cosine LR, one CPU thread. Optional terms shape
   the word vectors for the DiT: `--word-identity-weight` (each word's output names its own piece) and
   `--context-invariance-weight` (a word's outputs in different captions stay together); a third,
   `--neighbour-weight`, asks each word's output to name its neighbours as well, so that a name carries its
   phrase ("large", "above"); `--layout-weight` asks each emoji name's pieces for their object's cell, size and
   ranks in the scene (`pixart.demo.caption_layout`), with `--invariant-dims` keeping context invariance to part
   of the channels; the losses are in `pixart.demo.word_losses`. `--position-init` gives chosen heads a head start
   towards chosen neighbours (T5's relative-position bias, left at its init scale, hardly moves in a few hundred
   steps) and `--position-lr-mult` trains that bias faster; `--init-from` fine-tunes an earlier run's weights, and
   `--keep-from DIR --keep-dims N --keep-weight W` holds the first N output channels to an exported encoder's.
4. Export: only the encoder, as `T5EncoderModel` (`text_encoder/config.json` + fp16 `model.safetensors`), which
   stays frozen while the DiT trains, as PixArt keeps T5-XXL frozen.

    python -m pixart.demo.text_encoder --out runs/demo/export --run-dir runs/demo/text_encoder --steps 600
    python -m pixart.demo.text_encoder --out runs/demo/export --run-dir runs/demo/text_encoder --resume
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import T5Config, T5EncoderModel, T5ForConditionalGeneration, T5Tokenizer

from pixart.data.emoji import long_caption, sample_scene, scene_seed, short_caption
from pixart.demo._common import (
    CHECKPOINT,
    CsvLog,
    atomic_torch_save,
    cosine_lr,
    folder_mb,
    load_checkpoint,
    plot_curves,
    replace_dir,
    run_trainer,
)
from pixart.demo.caption_layout import layout_corpus, layout_heads, training_layout_batch
from pixart.demo.span_corruption import make_batch, training_batch
from pixart.demo.tokenizer import (
    EOS_ID,
    PAD_ID,
    load_tokenizer,
    sentinel_ids,
    train_tokenizer,
    vocabulary_lines,
)
from pixart.demo.word_losses import (
    add_position_bias,
    context_invariance_loss,
    keep_loss,
    layout_loss,
    neighbour_heads,
    neighbour_loss,
    parse_position_init,
    word_identity_loss,
)

logger = logging.getLogger(__name__)


# ---- config -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TextEncoderTrainConfig:
    """Everything that defines a text-encoder run; saved as a plain dict in the checkpoint."""

    # tokenizer
    sp_vocab_size: int = 1024  # sentencepiece pieces incl. pad/eos/unk (an upper bound: the corpus may support fewer)
    extra_ids: int = 100
    model_max_length: int = 300  # PixArt-Sigma's caption length
    corpus_scenes: int = 20000
    scene_sizes: tuple[tuple[int, int], ...] = ((256, 256), (320, 192), (192, 320), (256, 192), (192, 256))
    # model (encoder kept; decoder only for pre-training)
    d_model: int = 256
    d_kv: int = 64
    num_heads: int = 4
    d_ff: int = 1024
    num_layers: int = 4
    num_decoder_layers: int = 1
    # span corruption
    noise_density: float = 0.15
    mean_noise_span_length: float = 3.0
    max_length: int = 128  # caption tokens before corruption (longer ones are cut)
    # word identity: weight of an extra loss asking every visible word piece's encoder output to name its own
    # piece through the output head (0: span corruption alone, the recipe's T5; see `word_identity_loss`)
    word_identity_weight: float = 0.0
    # context invariance: weight of an extra loss on the share of the word pieces' output variance that is context
    # (one piece's outputs in different captions apart), 0: off (see `context_invariance_loss`)
    context_invariance_weight: float = 0.0
    # neighbours: weight of an extra loss asking every visible word piece's output to name the pieces at these
    # offsets from it, through a head of its own per offset (0: off; see `neighbour_loss`)
    neighbour_weight: float = 0.0
    neighbour_offsets: tuple[int, ...] = (-2, -1, 1, 2)
    # layout: weight of an extra loss asking every piece of an emoji name to predict its object's grid cell and
    # size in the scene (0: off; see `layout_loss`); context invariance then applies to the first
    # `invariant_dims` channels only (0: all), leaving the rest free to carry the phrase
    layout_weight: float = 0.0
    invariant_dims: int = 0
    # the relative-position bias's learning rate as a multiple of `lr`. At T5's init (std d_model^-0.5) and a few
    # hundred steps it hardly moves, and the encoder stays nearly blind to word order (docs/demo-model.md)
    position_lr_mult: float = 1.0
    # (head, offset, bias) added to the encoder's relative-position bias before training: head `head` of every layer
    # then looks `offset` tokens away (-1: the word before) with a head start of `bias` over the content logits,
    # whose spread is 5-20 (T5 does not scale them); see `add_position_bias`
    position_init: tuple[tuple[int, int, float], ...] = ()
    # start from the model weights of this text-encoder checkpoint.pt (its tokenizer must be the one used)
    init_from: str = ""
    # keep: hold the first `keep_dims` output channels to those of this exported text encoder (a T5EncoderModel
    # folder) on the layout batch's clean captions, with this weight (see `keep_loss`): a DiT that reads that encoder
    # then finds its names as it knows them, the layout loss shaping only the other channels. Needs layout_weight.
    keep_from: str = ""
    keep_dims: int = 0
    keep_weight: float = 0.0
    # optimisation
    steps: int = 600
    batch_size: int = 32
    lr: float = 1e-3
    warmup: int = 100
    min_lr_frac: float = 0.05
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    seed: int = 0
    # bookkeeping
    log_every: int = 10
    save_every_min: float = 3.0
    eval_seed: int = 1  # held-out captions come from another dataset seed
    eval_captions: int = 256

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TextEncoderTrainConfig:
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise KeyError(f"unknown text-encoder config keys {sorted(unknown)}")
        fix = {
            k: tuple(tuple(x) if isinstance(x, list) else x for x in v) for k, v in d.items() if isinstance(v, list)
        }
        return cls(**{**d, **fix})


def t5_config(cfg: TextEncoderTrainConfig, vocab_size: int) -> T5Config:
    """T5 v1.1-style config (as PixArt's T5-XXL: gated-GELU, untied head) at the demo's size."""
    return T5Config(
        vocab_size=vocab_size,
        d_model=cfg.d_model,
        d_kv=cfg.d_kv,
        d_ff=cfg.d_ff,
        num_layers=cfg.num_layers,
        num_decoder_layers=cfg.num_decoder_layers,
        num_heads=cfg.num_heads,
        feed_forward_proj="gated-gelu",
        tie_word_embeddings=False,
        dropout_rate=0.0,
        pad_token_id=PAD_ID,
        eos_token_id=EOS_ID,
        decoder_start_token_id=PAD_ID,
    )


# ---- corpus ----------------------------------------------------------------------------------------------------


def caption_corpus(seed: int, n_scenes: int, sizes: Sequence[tuple[int, int]]) -> list[str]:
    """Short and long captions of scenes 0..n_scenes-1 of dataset `seed` (layout only, nothing is rendered)."""
    out = []
    for i in range(n_scenes):
        scene = sample_scene(scene_seed(seed, i), *sizes[i % len(sizes)])
        out += [short_caption(scene), long_caption(scene)]
    return out


# ---- training ---------------------------------------------------------------------------------------------------


def encode_corpus(tok: T5Tokenizer, texts: Sequence[str]) -> list[list[int]]:
    """Token ids without the eos (span corruption appends its own)."""
    return [ids[:-1] for ids in tok(list(texts)).input_ids]


@torch.no_grad()
def eval_loss(model: T5ForConditionalGeneration, batches: Sequence[dict[str, torch.Tensor]]) -> tuple[float, float]:
    """(mean loss, target-token accuracy) over fixed held-out batches."""
    model.eval()
    losses, correct, total = [], 0, 0
    for b in batches:
        out = model(**b)
        losses.append(float(out.loss))
        keep = b["labels"] != -100
        correct += int((out.logits.argmax(-1) == b["labels"])[keep].sum())
        total += int(keep.sum())
    model.train()
    return sum(losses) / len(losses), correct / max(1, total)


def export_encoder(model: T5ForConditionalGeneration, tokenizer_dir: Path, out_dir: Path) -> dict[str, float]:
    """Write out_dir/text_encoder (T5EncoderModel, fp16 safetensors) and copy the tokenizer to out_dir/tokenizer."""
    encoder = T5EncoderModel(model.config)
    keys = {k: v for k, v in model.state_dict().items() if k.startswith(("shared.", "encoder."))}
    missing, unexpected = encoder.load_state_dict(keys, strict=False)
    missing = [k for k in missing if k != "encoder.embed_tokens.weight"]  # tied to shared.weight
    if missing or unexpected:
        raise KeyError(f"encoder export: missing {missing}, unexpected {unexpected}")

    def write_encoder(tmp: Path) -> None:
        torch.nn.Module.half(encoder)  # plain cast: the fp16 files keep the folder small; load with dtype=float32
        encoder.save_pretrained(tmp, safe_serialization=True)

    replace_dir(write_encoder, out_dir / "text_encoder")
    replace_dir(lambda tmp: shutil.copytree(tokenizer_dir, tmp), out_dir / "tokenizer")
    return {
        "encoder_params": sum(p.numel() for p in encoder.parameters()),
        "text_encoder_mb": round(folder_mb(out_dir / "text_encoder"), 3),
        "tokenizer_mb": round(folder_mb(out_dir / "tokenizer"), 3),
    }


LOG_FIELDS = ("step", "seconds", "lr", "loss", "eval_loss", "eval_acc")


def train(
    cfg: TextEncoderTrainConfig,
    run_dir: str | Path,
    out_dir: str | Path,
    *,
    resume: bool = False,
    stop_at: int | None = None,
    tokenizer: str | Path | None = None,
) -> list[float]:
    """Train (or resume) tokenizer + T5; checkpoint and export every `cfg.save_every_min` minutes and at the end.

    Args:
        cfg: the run's config (on resume the checkpoint's, with `steps` from `cfg`).
        run_dir: tokenizer/ (trained once), checkpoint.pt, log.csv, loss.png, eval.json, train_config.json.
        out_dir: text_encoder/ and tokenizer/ are written here.
        resume: continue from run_dir/checkpoint.pt; without it an existing checkpoint is an error.
        stop_at: stop (and save) after this step, as if interrupted; the schedule still follows cfg.steps.
        tokenizer: a tokenizer folder to copy to run_dir/tokenizer instead of training one (a new T5 for an
            existing model keeps its token ids).
    Returns:
        The training loss of every step run by this call.
    """
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path, tok_dir = run_dir / CHECKPOINT, run_dir / "tokenizer"
    state = None
    if ckpt_path.is_file():
        if not resume:
            raise ValueError(f"{ckpt_path} exists: pass resume=True (--resume) or use another run dir")
        state = load_checkpoint(ckpt_path)
        cfg = dataclasses.replace(TextEncoderTrainConfig.from_dict(state["config"]), steps=cfg.steps)
    (run_dir / "train_config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")

    t0 = time.time()
    corpus = caption_corpus(cfg.seed, cfg.corpus_scenes, cfg.scene_sizes)
    if (state is None or not (tok_dir / "spiece.model").is_file()) and tokenizer is not None:
        shutil.rmtree(tok_dir, ignore_errors=True)
        shutil.copytree(tokenizer, tok_dir)
    elif state is None or not (tok_dir / "spiece.model").is_file():
        train_tokenizer(corpus + vocabulary_lines(), tok_dir, cfg.sp_vocab_size, cfg.extra_ids, cfg.model_max_length)
    tok = load_tokenizer(tok_dir)
    if cfg.layout_weight:  # the same token ids as encode_corpus, and where each name is in them
        encoded, layouts = layout_corpus(tok, cfg.seed, cfg.corpus_scenes, cfg.scene_sizes)
    else:
        encoded, layouts = encode_corpus(tok, corpus), []
    sentinels = sentinel_ids(tok, cfg.extra_ids)
    held_out = encode_corpus(tok, caption_corpus(cfg.eval_seed, cfg.eval_captions // 2, cfg.scene_sizes))
    eval_rng = np.random.default_rng([cfg.eval_seed, 0])
    eval_batches = [make_batch(held_out[i : i + 64], cfg, sentinels, eval_rng) for i in range(0, len(held_out), 64)]
    lengths = [len(x) for x in encoded]
    logger.info("corpus: %d captions, tokens/caption mean %.1f max %d (%.0fs)", len(encoded), np.mean(lengths),
                max(lengths), time.time() - t0)  # fmt: skip

    torch.manual_seed(cfg.seed)
    model = T5ForConditionalGeneration(t5_config(cfg, len(tok))).train()
    with torch.no_grad():  # T5 v1.1 inits the untied head with std 1 (logits ~ sqrt(d_model)); start at 1/sqrt(d)
        model.lm_head.weight.normal_(0.0, cfg.d_model**-0.5)
    if state is None and cfg.init_from:
        model.load_state_dict(load_checkpoint(Path(cfg.init_from))["model"])
        logger.info("model weights from %s", cfg.init_from)
    keep = None
    if cfg.keep_weight:
        if not cfg.layout_weight or not cfg.keep_from:
            raise ValueError("keep_weight needs layout_weight and keep_from (the encoder whose channels to keep)")
        keep = T5EncoderModel.from_pretrained(cfg.keep_from, dtype=torch.float32).eval().requires_grad_(False)
    if state is None and cfg.position_init:
        add_position_bias(model, cfg.position_init)
    heads = neighbour_heads(cfg, len(tok)) if cfg.neighbour_weight else torch.nn.ModuleList()
    layout = layout_heads(cfg.d_model) if cfg.layout_weight else torch.nn.ModuleDict()
    params = [*model.parameters(), *heads.parameters(), *layout.parameters()]
    position = [p for n, p in model.named_parameters() if "relative_attention_bias" in n]
    rest = [p for p in params if all(p is not q for q in position)]
    groups = [{"params": rest, "lr_mult": 1.0}, {"params": position, "lr_mult": cfg.position_lr_mult}]
    if cfg.position_lr_mult == 1.0:  # one group, as the checkpoints of earlier runs have it
        groups = [{"params": params, "lr_mult": 1.0}]
    opt = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    step, elapsed = 0, 0.0
    if state is not None:
        model.load_state_dict(state["model"])
        heads.load_state_dict(state.get("heads", {}))
        layout.load_state_dict(state.get("layout", {}))
        opt.load_state_dict(state["optim"])
        step, elapsed = int(state["step"]), float(state["elapsed"])
        logger.info("resumed %s at step %d (%.0f s trained)", ckpt_path, step, elapsed)
    n_enc = sum(p.numel() for n, p in model.named_parameters() if n.startswith(("shared.", "encoder.")))
    logger.info("T5: %.2fM params (encoder %.2fM), vocab %d; steps %d -> %d",
                sum(p.numel() for p in model.parameters()) / 1e6, n_enc / 1e6, len(tok), step, cfg.steps)  # fmt: skip

    log = CsvLog(run_dir / "log.csv", LOG_FIELDS, resume_step=step)
    last_save, losses, first_step, first_elapsed = time.time(), [], step, elapsed
    end = cfg.steps if stop_at is None else min(cfg.steps, stop_at)

    def save() -> None:
        atomic_torch_save(
            {"model": model.state_dict(), "heads": heads.state_dict(), "layout": layout.state_dict(),
             "optim": opt.state_dict(), "step": step, "elapsed": elapsed, "config": cfg.to_dict()},
            ckpt_path,
        )  # fmt: skip
        loss, acc = eval_loss(model, eval_batches)
        sizes = export_encoder(model, tok_dir, out_dir)
        report = {"step": step, "train_seconds": round(elapsed, 1), "eval_loss": loss, "eval_token_acc": acc,
                  "vocab_size": len(tok), **sizes}  # fmt: skip
        (run_dir / "eval.json").write_text(json.dumps(report, indent=2) + "\n")
        log.write({"step": step, "seconds": round(elapsed, 1), "eval_loss": loss, "eval_acc": acc})
        plot_curves(log.path, run_dir / "loss.png", ["loss", "eval_loss"], title="demo T5 span-corruption loss")
        logger.info("step %d: saved; held-out loss %.4f, token acc %.3f; text_encoder %.2f MB", step, loss, acc,
                    sizes["text_encoder_mb"])  # fmt: skip

    try:
        while step < end:
            t0 = time.time()
            lr = cosine_lr(step, cfg.steps, cfg.lr, cfg.warmup, cfg.min_lr_frac)
            for group in opt.param_groups:
                group["lr"] = lr * group["lr_mult"]
            batch = training_batch(encoded, cfg, sentinels, step)
            out = model(**batch)
            loss_t = out.loss
            if cfg.word_identity_weight:
                identity = word_identity_loss(model, out.encoder_last_hidden_state, batch["input_ids"], min(sentinels))
                loss_t = loss_t + cfg.word_identity_weight * identity
            if cfg.context_invariance_weight:
                kept = out.encoder_last_hidden_state[..., : cfg.invariant_dims or None]
                context = context_invariance_loss(kept, batch["input_ids"], min(sentinels))
                loss_t = loss_t + cfg.context_invariance_weight * context
            if cfg.neighbour_weight:
                near = neighbour_loss(
                    heads, cfg.neighbour_offsets, out.encoder_last_hidden_state, batch["input_ids"], min(sentinels)
                )
                loss_t = loss_t + cfg.neighbour_weight * near
            if cfg.layout_weight:
                clean = training_layout_batch(encoded, layouts, cfg.seed, step, cfg.batch_size, cfg.max_length)
                h = model.encoder(input_ids=clean["input_ids"], attention_mask=clean["attention_mask"])
                placed = layout_loss(layout, h.last_hidden_state, clean)
                loss_t = loss_t + cfg.layout_weight * placed
                if keep is not None:
                    with torch.no_grad():
                        target = keep(input_ids=clean["input_ids"], attention_mask=clean["attention_mask"])
                    kept = keep_loss(
                        h.last_hidden_state, target.last_hidden_state, clean["attention_mask"], cfg.keep_dims
                    )
                    loss_t = loss_t + cfg.keep_weight * kept
            opt.zero_grad(set_to_none=True)
            loss_t.backward()
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            step += 1
            elapsed += time.time() - t0
            loss = float(loss_t.detach())
            if not math.isfinite(loss):
                raise FloatingPointError(f"T5 loss is {loss} at step {step}")
            losses.append(loss)
            if step % cfg.log_every == 0 or step == end:
                log.write({"step": step, "seconds": round(elapsed, 1), "lr": lr, "loss": loss})
                logger.info("step %d/%d loss %.4f lr %.2e %.2fs/step%s", step, cfg.steps, loss, lr,
                            (elapsed - first_elapsed) / (step - first_step),
                            f" (layout {float(placed.detach()):.4f})" if cfg.layout_weight else "")  # fmt: skip
            if step < end and time.time() - last_save > cfg.save_every_min * 60:
                save()
                last_save = time.time()
        save()
    finally:
        log.close()
    return losses


# ---- command line -----------------------------------------------------------------------------------------------


# Config fields set from the command line as they are (--corpus-scenes sets corpus_scenes, and so on).
OPTIONS = (
    ("steps", int, "total optimisation steps (also sets the LR schedule)"),
    ("seed", int, "seed of the caption corpus, batches and init"),
    ("batch_size", int, "captions per step"),
    ("lr", float, "peak AdamW learning rate"),
    ("warmup", int, "linear warm-up steps of the learning rate"),
    ("corpus_scenes", int, "scenes whose 2 captions form the corpus"),
    ("save_every_min", float, "minutes between checkpoints"),
    ("word_identity_weight", float, "weight of the word-identity loss (each output names its own piece)"),
    ("context_invariance_weight", float, "weight of the context-invariance loss (one piece, one vector)"),
    ("neighbour_weight", float, "weight of the neighbour loss (each output names the pieces 2 and 1 either side)"),
    ("layout_weight", float, "weight of the layout loss (each name's pieces: its object's cell, size, ranks)"),
    ("invariant_dims", int, "context invariance on the first N output channels only (0: all)"),
    ("position_lr_mult", float, "learning rate of the relative-position bias as a multiple of --lr"),
    ("keep_from", str, "an exported text_encoder/ folder whose first --keep-dims output channels are kept"),
    ("keep_dims", int, "how many leading output channels --keep-from holds"),
    ("keep_weight", float, "weight of the keep loss (share of those channels' variance missed), with the layout loss"),
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m pixart.demo.text_encoder",
        description="Train the demo sentencepiece tokenizer and T5 encoder on emoji captions (span corruption); "
        "writes OUT/tokenizer and OUT/text_encoder in the diffusers PixArt layout.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    d = TextEncoderTrainConfig()
    p.add_argument("--out", required=True, metavar="DIR", help="export folder: DIR/text_encoder and DIR/tokenizer")
    p.add_argument("--run-dir", metavar="DIR", help="tokenizer, checkpoint, log.csv, loss.png (default: OUT/t5_run)")
    p.add_argument("--resume", action="store_true", help="continue from RUN_DIR/checkpoint.pt if it exists")
    for field, kind, text in OPTIONS:
        p.add_argument("--" + field.replace("_", "-"), type=kind, default=getattr(d, field), help=text)
    p.add_argument("--init-from", metavar="CKPT", default="", help="start from this text-encoder checkpoint.pt")
    p.add_argument(
        "--position-init",
        default="",
        metavar="HEAD:OFFSET:BIAS,...",
        help="add BIAS to the encoder's relative-position bias of HEAD at OFFSET (-1: the word before) at the start",
    )
    p.add_argument(
        "--tokenizer",
        metavar="DIR",
        help="use this tokenizer folder (e.g. a shipped model's tokenizer/) instead of training one",
    )
    p.add_argument("--vocab-size", type=int, default=d.sp_vocab_size, help="sentencepiece pieces (upper bound)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (the demo is sized for one)")
    p.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"), help="log level")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        position_init = parse_position_init(args.position_init)
    except ValueError as e:
        parser.error(str(e))
    cfg = TextEncoderTrainConfig(
        **{field: getattr(args, field) for field, _, _ in OPTIONS},
        sp_vocab_size=args.vocab_size,
        init_from=args.init_from,
        position_init=position_init,
    )
    return run_trainer(
        args, "t5_run", lambda run_dir: train(cfg, run_dir, args.out, resume=args.resume, tokenizer=args.tokenizer)
    )


if __name__ == "__main__":
    raise SystemExit(main())
