"""`pixart.demo.layout`: detail energy and box ratio, on latents whose values are known, then end to end on the
bundled model's VAE and transformer."""

from __future__ import annotations

import math

import pytest
import torch

from pixart.commands.generate import BUNDLED_MODEL
from pixart.demo.layout import Layout, latent_box, main, measure, object_energy, single_object_prompts

needs_package = pytest.mark.skipif(not BUNDLED_MODEL.is_dir(), reason="no bundled demo model")


def test_object_energy_of_a_bump_in_its_box():
    latents = torch.full((1, 4, 8, 8), 3.0)  # background 3 in every channel
    latents[0, :, 2:4, 5:7] += 2.0  # a 2x2 object: squared distance 4 per channel, 16 per cell
    layout = object_energy(latents, [(5, 2, 7, 4)])
    assert layout.energy == pytest.approx(16 * 4 / 64 / 4)  # per cell, per channel
    assert layout.box_ratio == pytest.approx(16.0)  # all of it in a box of 1/16 of the image


def test_box_ratio_is_one_when_the_box_holds_its_share():
    g = torch.Generator().manual_seed(0)
    latents = torch.zeros(1, 4, 8, 8)
    latents[0, :, ::2, ::2] = torch.randn(4, 4, 4, generator=g).abs() + 1  # energy on a regular lattice
    e = ((latents[0] - 0) ** 2).sum(0)
    assert object_energy(latents, [(0, 0, 8, 4)]).box_ratio == pytest.approx(float(e[:4].sum() / e.sum() * 2))
    flat = object_energy(torch.ones(2, 4, 8, 8), [(0, 0, 2, 2), (1, 1, 3, 3)])
    assert flat == Layout(energy=0.0, box_ratio=0.0)  # nothing drawn at all


def test_latent_box_takes_every_cell_the_box_touches():
    assert latent_box((5, 9, 21, 24), 8, (16, 16)) == (0, 1, 3, 3)
    assert latent_box((-4, 120, 20, 136), 8, (16, 16)) == (0, 15, 3, 16)  # clipped to the latent


def test_object_energy_rejects_mismatched_boxes():
    with pytest.raises(ValueError, match="one box per latent"):
        object_energy(torch.zeros(2, 4, 8, 8), [(0, 0, 1, 1)])


def test_single_object_prompts_are_held_out_single_scenes():
    prompts = single_object_prompts(5, 128)
    assert len(prompts) == 5 and all(len(p.scene.objects) == 1 for p in prompts)
    assert [p.prompt for p in prompts] == [p.prompt for p in single_object_prompts(5, 128)]
    assert all(p.scene.width == 128 for p in prompts)


@needs_package
def test_real_scenes_concentrate_their_energy_in_the_box():
    from pixart.pipeline import Text2Image

    pipe = Text2Image.from_pretrained(BUNDLED_MODEL)
    samples, scenes = measure(pipe, single_object_prompts(3, 128), steps=2, seed=0)
    assert scenes.box_ratio > 3 and scenes.energy > 0.1  # the renders draw their object, inside its box
    assert math.isfinite(samples.energy) and samples.energy >= 0


@needs_package
def test_cli_prints_one_row_per_model(capsys):
    assert main([str(BUNDLED_MODEL), "--size", "128", "-n", "2", "--steps", "2"]) == 0
    rows = [r for r in capsys.readouterr().out.splitlines() if r.startswith(f"| {BUNDLED_MODEL}")]
    assert len(rows) == 1 and rows[0].count("|") == 9


@needs_package
def test_resampling_from_low_noise_keeps_the_scene():
    from pixart.demo.layout import resample_from, scene_latents
    from pixart.pipeline import Text2Image

    pipe = Text2Image.from_pretrained(BUNDLED_MODEL)
    prompts = single_object_prompts(2, 128)
    scenes = scene_latents(pipe.vae, [p.scene for p in prompts])
    kept = resample_from(pipe, prompts, scenes, 50, steps=20, cfg=1.0)  # one DDIM step from t = 49
    assert (kept - scenes).pow(2).mean() < 0.05 * scenes.var()  # barely noised, barely changed
    redrawn = resample_from(pipe, prompts, scenes, 999, steps=20, cfg=1.0)  # from pure noise: a new image
    assert (kept - scenes).pow(2).mean() < (redrawn - scenes).pow(2).mean() / 4


def test_from_t_rejects_bad_values():
    with pytest.raises(SystemExit):
        main(["model", "--from-t", "300,abc"])
