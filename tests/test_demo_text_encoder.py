"""The demo tokenizer + T5 recipe: real-layout tokenizer folder, span corruption, training, resume, export."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer, T5EncoderModel, T5ForConditionalGeneration, T5Tokenizer, T5TokenizerFast

from pixart.demo.span_corruption import random_spans_noise_mask, span_corruption
from pixart.demo.text_encoder import (
    TextEncoderTrainConfig,
    caption_corpus,
    make_batch,
    neighbour_heads,
    t5_config,
    train,
)
from pixart.demo.tokenizer import load_tokenizer, sentinel_ids, train_tokenizer, vocabulary_lines
from pixart.demo.word_losses import context_invariance_loss, neighbour_loss, word_identity_loss

PROMPT = "a red apple next to two small cats on a blue background"


def tiny_cfg(**changes) -> TextEncoderTrainConfig:
    base = TextEncoderTrainConfig(
        corpus_scenes=40, d_model=32, d_kv=8, num_heads=2, d_ff=64, num_layers=2, num_decoder_layers=1,
        batch_size=4, steps=4, warmup=1, lr=3e-3, log_every=1, eval_captions=8, extra_ids=20, save_every_min=1e9,
    )  # fmt: skip
    return dataclasses.replace(base, **changes)


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("tok")
    return train_tokenizer(caption_corpus(0, 40, [(256, 256)]) + vocabulary_lines(), out, 512, extra_ids=20)


def test_tokenizer_folder_has_t5_layout(tokenizer_dir):
    assert sorted(p.name for p in tokenizer_dir.iterdir()) == [
        "special_tokens_map.json",
        "spiece.model",
        "tokenizer_config.json",
    ]
    config = json.loads((tokenizer_dir / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "T5Tokenizer" and config["extra_ids"] == 20


@pytest.mark.parametrize("cls", [T5Tokenizer, T5TokenizerFast, AutoTokenizer])
def test_tokenizer_loads_with_real_vocabulary(tokenizer_dir, cls):
    tok = cls.from_pretrained(str(tokenizer_dir))
    ids = tok(PROMPT).input_ids
    pieces = tok.convert_ids_to_tokens(ids)
    assert pieces == ["▁" + w for w in PROMPT.split()] + ["</s>"]  # one whole-word piece per word, no unk
    assert (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2)
    assert tok.convert_tokens_to_ids("<extra_id_0>") == len(tok) - 1  # T5: sentinels last, in reverse order
    assert tok.convert_tokens_to_ids("<extra_id_19>") == len(tok) - 20
    assert tok.decode(ids, skip_special_tokens=True) == PROMPT
    assert 2 not in tok("a zebra-like Xylophone 42").input_ids  # unseen words fall back to pieces, not unk


def test_span_corruption_paper_example():
    words = "Thank you for inviting me to your party last week .".split()
    ids = list(range(10, 10 + len(words)))
    mask = np.array([w in ("for", "inviting", "last") for w in words])
    x, z, eos = 100, 99, 1  # <X>, <Y>, <Z> = sentinels 0, 1, 2
    inputs, targets = span_corruption(ids, mask, [100, 99, 98], eos)
    assert inputs == [10, 11, x, 14, 15, 16, 17, z, 19, 20, eos]  # Thank you <X> me to your party <Y> week .
    assert targets == [x, 12, 13, z, 18, 98, eos]  # <X> for inviting <Y> last <Z>
    with pytest.raises(ValueError):
        span_corruption(ids, ~mask, [100, 99, 98])  # starts with noise


def test_random_spans_noise_mask_density_and_spans():
    rng = np.random.default_rng(0)
    mask = random_spans_noise_mask(100, 0.15, 3.0, rng)
    assert mask.sum() == 15 and not mask[0]
    starts = np.flatnonzero(mask[1:] & ~mask[:-1])
    assert len(starts) == 5  # 15 noise tokens / mean span 3


def test_make_batch_pads_inputs_and_masks_labels(tokenizer_dir):
    tok = load_tokenizer(tokenizer_dir)
    cfg = tiny_cfg()
    encoded = [ids[:-1] for ids in tok([PROMPT, "a cat"]).input_ids]
    batch = make_batch(encoded, cfg, sentinel_ids(tok, cfg.extra_ids), np.random.default_rng(0))
    assert batch["input_ids"].shape[0] == 2 and batch["attention_mask"].dtype == torch.bool
    assert (batch["input_ids"][1][~batch["attention_mask"][1]] == 0).all()
    assert (batch["labels"] == -100).any() and (
        batch["labels"][:, 0] == tok.convert_tokens_to_ids("<extra_id_0>")
    ).all()


def test_training_step_loss_decreases_on_fixed_batch(tokenizer_dir):
    tok = load_tokenizer(tokenizer_dir)
    cfg = tiny_cfg()
    torch.manual_seed(0)
    model = T5ForConditionalGeneration(t5_config(cfg, len(tok)))
    encoded = [ids[:-1] for ids in tok(caption_corpus(3, 4, [(256, 256)])).input_ids]
    batch = make_batch(encoded, cfg, sentinel_ids(tok, cfg.extra_ids), np.random.default_rng(0))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(5):
        loss = model(**batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]


def test_word_identity_loss_asks_only_word_pieces_and_is_learnt(tokenizer_dir):
    tok = load_tokenizer(tokenizer_dir)
    cfg = tiny_cfg()
    torch.manual_seed(0)
    model = T5ForConditionalGeneration(t5_config(cfg, len(tok)))
    sentinels = sentinel_ids(tok, cfg.extra_ids)
    encoded = [ids[:-1] for ids in tok(caption_corpus(3, 4, [(256, 256)])).input_ids]
    batch = make_batch(encoded, cfg, sentinels, np.random.default_rng(0))
    ids = batch["input_ids"]
    assert (ids == 0).any() and (ids == 1).any() and (ids >= min(sentinels)).any()  # pad, eos and sentinels occur
    hidden = model.encoder(input_ids=ids, attention_mask=batch["attention_mask"]).last_hidden_state  # (B, S, D)
    logits = model.lm_head(hidden)
    words = (ids > 1) & (ids < min(sentinels))
    expected = torch.nn.functional.cross_entropy(logits[words], ids[words])  # by hand, over the word pieces only
    assert torch.allclose(word_identity_loss(model, hidden, ids, min(sentinels)), expected)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(5):
        hidden = model.encoder(input_ids=ids, attention_mask=batch["attention_mask"]).last_hidden_state
        loss = word_identity_loss(model, hidden, ids, min(sentinels))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0]


def test_word_identity_weight_changes_training_and_is_saved(tmp_path):
    plain = train(tiny_cfg(steps=3), tmp_path / "plain", tmp_path / "out-plain")
    weighted = train(tiny_cfg(steps=3, word_identity_weight=1.0), tmp_path / "weighted", tmp_path / "out-weighted")
    assert weighted[0] > plain[0]  # the same first batch and weights, plus a positive cross-entropy
    saved = json.loads((tmp_path / "weighted" / "train_config.json").read_text())
    assert saved["word_identity_weight"] == 1.0


def test_context_invariance_loss_is_the_context_share_of_the_word_pieces_variance():
    ids = torch.tensor([[5, 6, 5, 1, 0], [6, 5, 90, 1, 0]])  # pieces 5 and 6 twice or more; 90 a sentinel; eos, pad
    one_vector = torch.randn(100, 3)
    hidden = one_vector[ids]  # every piece the same vector wherever it stands: no context at all
    assert context_invariance_loss(hidden, ids, first_special=80) < 1e-6
    hidden = hidden.clone()
    hidden[0, 0] += 1.0  # piece 5 in its first caption moved by its context
    hidden[:, 2:] = torch.randn(2, 3, 3) * 100  # sentinel, eos and pad outputs must not count
    words = torch.cat([hidden[0, :3], hidden[1, :2]])  # (5, 3): 5, 6, 5, 6, 5
    piece_means = {5: words[[0, 2, 4]].mean(0), 6: words[[1, 3]].mean(0)}
    within = sum((w - piece_means[i]).pow(2).sum() for w, i in zip(words, [5, 6, 5, 6, 5], strict=True))
    expected = within / (words - words.mean(0)).pow(2).sum()
    torch.testing.assert_close(context_invariance_loss(hidden, ids, first_special=80), expected)
    assert 0 < context_invariance_loss(torch.randn(2, 5, 3), ids, first_special=80) <= 1


def test_context_invariance_and_given_tokenizer_are_used_and_saved(tmp_path, tokenizer_dir):
    plain = train(tiny_cfg(steps=2), tmp_path / "plain", tmp_path / "out-plain", tokenizer=tokenizer_dir)
    weighted = train(
        tiny_cfg(steps=2, context_invariance_weight=1.0), tmp_path / "w", tmp_path / "out-w", tokenizer=tokenizer_dir
    )
    assert weighted[0] > plain[0]  # the same first batch and weights, plus a positive share
    saved = json.loads((tmp_path / "w" / "train_config.json").read_text())
    assert saved["context_invariance_weight"] == 1.0
    for name in ("spiece.model", "tokenizer_config.json"):  # the given tokenizer, not a newly trained one
        assert (tmp_path / "out-w" / "tokenizer" / name).read_bytes() == (tokenizer_dir / name).read_bytes()


def test_neighbour_loss_asks_each_word_piece_for_its_neighbours():
    ids = torch.tensor([[5, 6, 7, 90, 8, 1, 0]])  # words 5 6 7, sentinel 90, word 8, eos, pad
    hidden = torch.eye(7).unsqueeze(0)  # (1, 7, 7): position i's output is one-hot i
    heads = torch.nn.ModuleList(torch.nn.Linear(7, 100, bias=False) for _ in (-1, 1))
    with torch.no_grad():  # a head that knows the answers: position i -> the piece before / after it, logit 50
        for head, k in zip(heads, (-1, 1), strict=True):
            head.weight.zero_()
            for i in range(7):
                if 0 <= i + k < 7:
                    head.weight[ids[0, i + k], i] = 50.0
    assert neighbour_loss(heads, (-1, 1), hidden, ids, first_special=80) < 1e-6
    # The pairs asked: (5->6, 6->7) forward and (6->5, 7->6) backward; 7->sentinel, 8->eos and the rest are not.
    with torch.no_grad():
        heads[1].weight[90, 2] = heads[1].weight[1, 4] = 100.0  # wrong answers where nothing is asked change nothing
    assert neighbour_loss(heads, (-1, 1), hidden, ids, first_special=80) < 1e-6
    with torch.no_grad():
        heads[1].weight[7, 1] = 0.0  # 6 no longer names its successor 7: that pair's loss is log(V)-ish
    expected = (0.0 + torch.log(torch.tensor(100.0)).item() / 2) / 2  # forward: mean of (0, log 100); backward: 0
    assert abs(neighbour_loss(heads, (-1, 1), hidden, ids, first_special=80).item() - expected) < 1e-3


def test_neighbour_weight_trains_heads_that_resume(tmp_path):
    cfg = tiny_cfg(neighbour_weight=1.0)
    assert len(neighbour_heads(cfg, 50)) == len(cfg.neighbour_offsets) == 4
    plain = train(tiny_cfg(), tmp_path / "plain", tmp_path / "out-plain")
    full = train(cfg, tmp_path / "a", tmp_path / "a_out")
    assert full[0] > plain[0]  # the same first batch and weights, plus a positive cross-entropy
    first = train(cfg, tmp_path / "b", tmp_path / "b_out", stop_at=2)
    rest = train(cfg, tmp_path / "b", tmp_path / "b_out", resume=True)
    np.testing.assert_allclose(first + rest, full, rtol=1e-5)  # the heads come back with the checkpoint
    assert json.loads((tmp_path / "a" / "train_config.json").read_text())["neighbour_weight"] == 1.0


def test_resume_matches_uninterrupted_run_and_export_loads(tmp_path):
    cfg = tiny_cfg()
    full = train(cfg, tmp_path / "a", tmp_path / "a_out")
    first = train(cfg, tmp_path / "b", tmp_path / "b_out", stop_at=2)
    with pytest.raises(ValueError):
        train(cfg, tmp_path / "b", tmp_path / "b_out")  # an existing checkpoint needs resume=True
    rest = train(cfg, tmp_path / "b", tmp_path / "b_out", resume=True)
    assert len(first) == 2 and len(rest) == 2
    np.testing.assert_allclose(first + rest, full, rtol=1e-5)
    rows = (tmp_path / "b" / "log.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:] if r.split(",")[3]] == ["1", "2", "3", "4"]  # no duplicated steps

    out = tmp_path / "b_out"
    encoder = T5EncoderModel.from_pretrained(str(out / "text_encoder"), dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(str(out / "tokenizer"))
    enc = tok([PROMPT], return_tensors="pt")
    hidden = encoder(**enc).last_hidden_state
    assert hidden.shape == (1, enc.input_ids.shape[1], cfg.d_model) and torch.isfinite(hidden).all()
