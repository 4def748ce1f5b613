"""`pixart.demo.position_probe`: mirrored twins, the inside/outside contrast on known differences, and the probe
itself with clean-image estimates whose answer is known (the scenes themselves; a caption-wide shift), then end to
end on the bundled model."""

from __future__ import annotations

import math

import pytest
import torch

from pixart.commands.generate import BUNDLED_MODEL
from pixart.demo import position_probe
from pixart.demo.layout import scene_latents, single_object_prompts
from pixart.demo.position_probe import contrast, main, mirrored, probe

needs_package = pytest.mark.skipif(not BUNDLED_MODEL.is_dir(), reason="no bundled demo model")


def test_mirrored_moves_the_object_to_the_opposite_cell_and_skips_the_centre():
    from pixart.data.emoji import short_caption

    prompts = single_object_prompts(40, 128)
    moved = [(p.scene, mirrored(p.scene)) for p in prompts]
    assert any(m is None for s, m in moved) and any(m is not None for s, m in moved)
    for scene, twin in moved:
        (a,) = scene.objects
        if twin is None:
            assert a.position == "center" or a.x * 2 == scene.width or a.y * 2 == scene.height
            continue
        (b,) = twin.objects
        assert (b.x, b.y) == (scene.width - a.x, scene.height - a.y) and b.position == position_probe.MIRROR[
            a.position
        ]
        assert (b.name, b.size, twin.background) == (a.name, a.size, scene.background)
        assert short_caption(twin) == short_caption(scene).replace(a.position, b.position, 1)


def test_with_object_swaps_only_the_emoji():
    from pixart.demo.position_probe import with_object

    scene = single_object_prompts(1, 128)[0].scene
    sun = with_object(scene, "sun")
    (a,), (b,) = scene.objects, sun.objects
    assert b.name == "sun" and (b.x, b.y, b.size, b.position) == (a.x, a.y, a.size, a.position)
    assert sun.background == scene.background
    with pytest.raises(ValueError, match="unknown emoji 'unicorn horn'"):
        with_object(scene, "unicorn horn")


def test_contrast_splits_the_energy_by_the_boxes():
    diff = torch.zeros(1, 4, 8, 8)
    diff[0, :, 0:2, 0:2] = 1.0  # energy 4 per cell in A's box
    diff[0, :, 6:8, 6:8] = -1.0  # and in B's
    diff[0, 0, 4, 4] = 2.0  # one cell outside: energy 4
    inside, outside = contrast(diff, [(0, 0, 2, 2), (6, 6, 8, 8)])
    assert inside.tolist() == pytest.approx([4.0]) and outside.tolist() == pytest.approx([4.0 / 56])
    with pytest.raises(ValueError, match="cover part of the latent"):
        contrast(diff, [(0, 0, 8, 8), (0, 0, 1, 1)])


@needs_package
def test_estimates_that_are_the_scenes_score_as_the_scenes(monkeypatch):
    from pixart.data.emoji import short_caption
    from pixart.pipeline import Text2Image

    pipe = Text2Image.from_pretrained(BUNDLED_MODEL)
    prompts = single_object_prompts(6, 128)
    scenes = [s for p in prompts if (m := mirrored(p.scene)) for s in (p.scene, m)]
    truth = dict(zip([short_caption(s) for s in scenes], scene_latents(pipe.vae, scenes), strict=True))
    monkeypatch.setattr(
        position_probe, "clean_estimates", lambda pipe, caps, xt, t: torch.stack([truth[c] for c in caps])
    )
    (row,) = probe(pipe, prompts, [999])
    assert row["ratio"] == pytest.approx(row["ratio_scenes"]) and row["moved"] == pytest.approx(1.0)
    assert row["ratio_scenes"] > 10  # the renders differ where the object is, and hardly anywhere else


@needs_package
def test_a_caption_wide_shift_scores_one(monkeypatch):
    from pixart.pipeline import Text2Image

    pipe = Text2Image.from_pretrained(BUNDLED_MODEL)

    def shifted(pipe, captions, xt, t):  # the caption moves the estimate, the same everywhere (position words
        # differ in length, so every pair differs)
        return xt + torch.tensor([float(len(c)) for c in captions])[:, None, None, None]

    monkeypatch.setattr(position_probe, "clean_estimates", shifted)
    prompts = [p for p in single_object_prompts(12, 128) if mirrored(p.scene) is not None]
    for row in probe(pipe, prompts, [999, 800]):
        assert row["ratio"] == pytest.approx(1.0, abs=1e-4)


@needs_package
def test_cli_prints_one_row_per_model_and_t(capsys):
    assert main([str(BUNDLED_MODEL), "--size", "128", "-n", "4", "--t", "999,700"]) == 0
    rows = [r for r in capsys.readouterr().out.splitlines() if r.startswith(f"| {BUNDLED_MODEL}")]
    assert len(rows) == 2 and all(math.isfinite(float(r.split("|")[4])) for r in rows)


def test_cli_rejects_bad_timesteps_and_unknown_objects(capsys):
    for bad in (["--t", "1000"], ["--object", "unicorn horn"]):
        with pytest.raises(SystemExit) as exit_info:
            main(["model", *bad])
        assert exit_info.value.code == 2
    assert "'unicorn horn': not an emoji of the vocabulary" in capsys.readouterr().err
