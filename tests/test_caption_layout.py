"""The demo T5's layout loss: where each emoji name is in a caption's tokens, its object's cell/size targets, the
loss itself (analytic cases) and its use in training (saved heads, resume, init from a checkpoint)."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from pixart.data.emoji import long_caption, sample_scene, scene_seed, short_caption
from pixart.data.emoji_vocab import BY_NAME, POSITIONS
from pixart.demo.caption_layout import SIZES, layout_batch, layout_corpus, layout_heads, name_layouts
from pixart.demo.text_encoder import caption_corpus, encode_corpus, train
from pixart.demo.tokenizer import load_tokenizer, train_tokenizer, vocabulary_lines
from pixart.demo.word_losses import layout_loss
from tests.test_demo_text_encoder import tiny_cfg


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    out = tmp_path_factory.mktemp("tok")
    return load_tokenizer(train_tokenizer(caption_corpus(0, 40, [(256, 256)]) + vocabulary_lines(), out, 512, 20))


def test_every_name_is_found_with_its_objects_cell_and_size(tok):
    for i in range(60):
        scene = sample_scene(scene_seed(0, i), 256, 256)
        for caption in (short_caption(scene), long_caption(scene)):
            ids = tok(caption).input_ids[:-1]
            found = name_layouts(tok, ids, scene)
            words = {tok.decode([ids[p] for p in x.positions]) for x in found}
            for name in {o.name for o in scene.objects}:  # every kind, singular or plural, at least once
                assert name in words or BY_NAME[name].plural_name in words, (caption, words)
            for x in found:
                objs = [
                    o
                    for o in scene.objects
                    if tok.decode([ids[p] for p in x.positions]) in (o.name, BY_NAME[o.name].plural_name)
                ]
                assert objs, (caption, x)
                assert x.cell == tuple(sum(o.position == p for o in objs) / len(objs) for p in POSITIONS)
                assert x.size == tuple(sum(o.size_word == s for o in objs) / len(objs) for s in SIZES)
                ys = sorted(o.y for o in scene.objects)
                assert x.row == tuple(sum(ys.index(o.y) == r for o in objs) / len(objs) for r in range(3))
            taken = [p for x in found for p in x.positions]
            assert len(taken) == len(set(taken))  # a token belongs to one name at most


def test_a_name_inside_a_longer_name_is_not_counted_twice(tok):
    scene = sample_scene(scene_seed(0, 0), 256, 256)
    long_names = [n for n in BY_NAME if " " in n and n.split()[-1] in BY_NAME]
    if not long_names:
        pytest.skip("no vocabulary name contains another")
    outer = long_names[0]
    inner = outer.split()[-1]
    a, b = scene.objects[0], scene.objects[0]
    objs = (
        dataclasses.replace(a, name=outer, position=POSITIONS[0]),
        dataclasses.replace(b, name=inner, position=POSITIONS[8]),
    )
    scene = dataclasses.replace(scene, objects=objs)
    ids = tok(f"a {outer} next to a {inner}").input_ids[:-1]
    found = name_layouts(tok, ids, scene)
    assert [tok.decode([ids[p] for p in x.positions]) for x in found] == [outer, inner]
    assert found[0].cell[0] == 1.0 and found[1].cell[8] == 1.0


def test_a_repeated_kind_gets_the_share_of_its_objects(tok):
    scene = sample_scene(scene_seed(0, 0), 256, 256)
    o = scene.objects[0]
    objs = tuple(dataclasses.replace(o, name="cat", position=p, size_word=s) for p, s in
                 [("top left", "small"), ("top left", "large"), ("bottom", "small")])  # fmt: skip
    scene = dataclasses.replace(scene, objects=objs)
    ids = tok(short_caption(scene)).input_ids[:-1]
    (x,) = name_layouts(tok, ids, scene)
    assert tok.decode([ids[p] for p in x.positions]) == "cats"
    assert x.cell[POSITIONS.index("top left")] == pytest.approx(2 / 3)
    assert x.cell[POSITIONS.index("bottom")] == pytest.approx(1 / 3)
    assert x.size == pytest.approx((2 / 3, 0.0, 1 / 3))
    assert x.row == x.col == pytest.approx((1 / 3, 1 / 3, 1 / 3))  # all three objects are cats


def test_a_pairs_upper_and_left_objects_rank_first(tok):
    scene = sample_scene(scene_seed(0, 0), 256, 256)
    o = scene.objects[0]
    objs = (dataclasses.replace(o, name="cat", x=200, y=30), dataclasses.replace(o, name="dog", x=40, y=220))
    scene = dataclasses.replace(scene, objects=objs)
    ids = tok("a cat above a dog").input_ids[:-1]
    cat, dog = name_layouts(tok, ids, scene)
    assert (cat.row, cat.col, dog.row, dog.col) == ((1, 0, 0), (0, 1, 0), (0, 1, 0), (1, 0, 0))


def test_layout_corpus_matches_the_t5_corpus_and_batches_keep_rows_in_range(tok):
    sizes = [(256, 256), (320, 192)]
    encoded, layouts = layout_corpus(tok, 0, 12, sizes)
    assert encoded == encode_corpus(tok, caption_corpus(0, 12, sizes))
    batch = layout_batch(encoded, layouts, [1, 3, 1], max_length=20)
    assert batch["input_ids"].shape == (3, min(20, max(len(encoded[i]) for i in (1, 3))))
    rows = batch["rows"]
    assert len(rows) == sum(len(x.positions) for i in (1, 3, 1) for x in layouts[i] if max(x.positions) < 20)
    assert (rows[:, 1] < 20).all() and (batch["attention_mask"][rows[:, 0], rows[:, 1]]).all()
    for key in ("cell", "size", "row", "col"):
        torch.testing.assert_close(batch[key].sum(1), torch.ones(len(rows)))


def test_layout_loss_analytic_cases():
    heads = layout_heads(4)
    for head in heads.values():
        torch.nn.init.zeros_(head.weight)  # uniform predictions: log 9 for the cell, log 3 for the size
    encoded = torch.randn(2, 5, 4)
    cell, size = torch.zeros(3, len(POSITIONS)), torch.zeros(3, 3)
    cell[:, 0], size[:, 2] = 1.0, 1.0
    batch = {"rows": torch.tensor([[0, 1], [1, 4], [1, 0]]), "cell": cell, "size": size}
    rank = torch.zeros(3, 3)
    rank[:, 1] = 1.0
    batch |= {"row": rank, "col": rank}
    expected = (math.log(9) + 3 * math.log(3)) / 4  # the four heads' mean
    assert layout_loss(heads, encoded, batch).item() == pytest.approx(expected)
    with torch.no_grad():  # heads that always give the answer: a large logit where the target is
        heads["cell"].bias[0] = heads["size"].bias[2] = heads["row"].bias[1] = heads["col"].bias[1] = 40.0
    assert layout_loss(heads, encoded, batch).item() < 1e-6
    empty = {"rows": torch.zeros(0, 2, dtype=torch.long)} | {key: value[:0] for key, value in batch.items()}
    assert layout_loss(heads, encoded, empty).item() == 0.0


def test_layout_weight_trains_heads_that_resume_and_init_from_starts_from_a_checkpoint(tmp_path, tok):
    cfg = tiny_cfg(layout_weight=1.0, invariant_dims=16, context_invariance_weight=1.0)
    plain = train(tiny_cfg(context_invariance_weight=1.0), tmp_path / "plain", tmp_path / "out-plain")
    full = train(cfg, tmp_path / "a", tmp_path / "a_out")
    assert full[0] > plain[0]  # the same span-corruption batch and weights, plus a positive cross-entropy
    first = train(cfg, tmp_path / "b", tmp_path / "b_out", stop_at=2)
    rest = train(cfg, tmp_path / "b", tmp_path / "b_out", resume=True)
    np.testing.assert_allclose(first + rest, full, rtol=1e-5)  # the layout heads come back with the checkpoint
    saved = json.loads((tmp_path / "a" / "train_config.json").read_text())
    assert saved["layout_weight"] == 1.0 and saved["invariant_dims"] == 16
    # A run that starts from a's weights begins where a ended, not from a fresh init.
    ckpt = tmp_path / "a" / "checkpoint.pt"
    again = train(tiny_cfg(init_from=str(ckpt), steps=1), tmp_path / "c", tmp_path / "c_out",
                  tokenizer=tmp_path / "a" / "tokenizer")  # fmt: skip
    fresh = train(tiny_cfg(steps=1), tmp_path / "d", tmp_path / "d_out", tokenizer=tmp_path / "a" / "tokenizer")
    assert again[0] < fresh[0]


def test_position_lr_mult_moves_only_the_relative_position_bias_faster(tmp_path):
    from pixart.demo._common import load_checkpoint

    def run(name: str, mult: float) -> dict[str, torch.Tensor]:
        train(tiny_cfg(steps=3, position_lr_mult=mult), tmp_path / name, tmp_path / f"{name}-out")
        return load_checkpoint(tmp_path / name / "checkpoint.pt")["model"]

    assert train(tiny_cfg(steps=0), tmp_path / "start", tmp_path / "start-out") == []  # the init, saved
    init = load_checkpoint(tmp_path / "start" / "checkpoint.pt")["model"]
    plain, fast = run("plain", 1.0), run("fast", 30.0)
    key = "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"
    moved = {n: (w[key] - init[key]).abs().max().item() for n, w in (("plain", plain), ("fast", fast))}
    assert moved["fast"] > 5 * moved["plain"] > 0
    assert len(load_checkpoint(tmp_path / "fast" / "checkpoint.pt")["optim"]["param_groups"]) == 2
    assert len(load_checkpoint(tmp_path / "plain" / "checkpoint.pt")["optim"]["param_groups"]) == 1


def test_position_init_adds_bias_at_the_offsets_bucket_and_bad_items_are_refused(tmp_path):
    from transformers import T5ForConditionalGeneration

    from pixart.demo.text_encoder import add_position_bias, main, parse_position_init, t5_config

    assert parse_position_init(" 0:-1:8, 2:1:2.5") == ((0, -1, 8.0), (2, 1, 2.5))
    assert parse_position_init("") == ()
    for bad in ("0:-1", "x:1:2", "0:0:3", "0:1:2:3"):
        with pytest.raises(ValueError, match="HEAD:OFFSET:BIAS"):
            parse_position_init(bad)
    with pytest.raises(SystemExit) as exit_info:
        main(["--out", str(tmp_path / "x"), "--position-init", "0:0:3"])
    assert exit_info.value.code == 2 and not (tmp_path / "x").exists()

    cfg = tiny_cfg()
    model = T5ForConditionalGeneration(t5_config(cfg, 60))
    weight = model.encoder.block[0].layer[0].SelfAttention.relative_attention_bias.weight  # (buckets, heads)
    before = weight.detach().clone()
    add_position_bias(model, ((1, -1, 5.0), (0, 2, 3.0)))
    changed = (weight.detach() - before).nonzero().tolist()
    # bidirectional buckets: 0..15 keys before the query (|offset| exact below 8), 16..31 after
    assert sorted(changed) == [[1, 1], [18, 0]]
    moved = weight.detach() - before
    assert moved[1, 1].item() == pytest.approx(5.0) and moved[18, 0].item() == pytest.approx(3.0)
    ids = torch.tensor([[5, 6, 7, 8, 1]])
    with torch.no_grad():  # head 1 now looks mostly at the word before: order matters more than it did
        a = model.encoder(input_ids=ids).last_hidden_state
        b = model.encoder(input_ids=ids.flip(1)).last_hidden_state
    assert not torch.allclose(a[0, 1], b[0, 3])


def test_keep_loss_is_the_share_of_the_kept_channels_variance_missed():
    from pixart.demo.word_losses import keep_loss

    target = torch.randn(2, 4, 6)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    encoded = target.clone()
    encoded[..., 3:] += 5.0  # channels past `dims` are free
    encoded[0, 3] += 100.0  # and so are pad positions
    assert keep_loss(encoded, target, mask, dims=3).item() == pytest.approx(0.0, abs=1e-6)
    kept = target[..., :3][mask.bool()]  # (5, 3)
    constant = kept.mean(0).expand(2, 4, 3)
    assert keep_loss(constant, target, mask, dims=3).item() == pytest.approx(1.0, rel=1e-5)


def test_keep_weight_needs_the_layout_loss_and_a_reference(tmp_path):
    with pytest.raises(ValueError, match="keep_weight needs layout_weight and keep_from"):
        train(tiny_cfg(keep_weight=1.0, keep_dims=8), tmp_path / "a", tmp_path / "a_out")


def test_keep_from_adds_the_reference_encoders_term(tmp_path):
    train(tiny_cfg(steps=2), tmp_path / "ref", tmp_path / "ref_out")
    tok_dir, ref = tmp_path / "ref" / "tokenizer", str(tmp_path / "ref_out" / "text_encoder")
    plain = train(tiny_cfg(layout_weight=1.0, steps=1), tmp_path / "a", tmp_path / "a_out", tokenizer=tok_dir)
    kept = train(
        tiny_cfg(layout_weight=1.0, steps=1, keep_from=ref, keep_dims=16, keep_weight=1.0),
        tmp_path / "b",
        tmp_path / "b_out",
        tokenizer=tok_dir,
    )
    assert kept[0] > plain[0]  # the same batches and init, plus a positive share of missed variance
