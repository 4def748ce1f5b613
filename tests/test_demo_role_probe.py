"""The role probe: its scenes and swapped captions, and exact cases of the gain on a real (tiny) transformer."""

from __future__ import annotations

import pytest
import torch

from pixart.data.emoji_captions import short_caption
from pixart.data.emoji_layout import Scene, SceneObject
from pixart.demo.role_probe import main, other_pair, renamed, role_gain, role_scenes, swapped_names, weights_of
from pixart.model import PixArtSigma
from tests.conftest import randomize, tiny_config


def scene() -> Scene:
    heart = SceneObject("heart", "2764", "object", 38, 134, 77, "medium", "left")
    key = SceneObject("key", "1F511", "object", 214, 134, 77, "small", "right")
    return Scene(256, 256, "yellow", (250, 215, 40), (heart, key))


def test_swapping_names_keeps_places_and_sizes_and_reverses_the_caption():
    s = swapped_names(scene())
    assert [o.name for o in s.objects] == ["key", "heart"]
    assert [(o.x, o.y, o.size, o.size_word, o.position) for o in s.objects] == [
        (o.x, o.y, o.size, o.size_word, o.position) for o in scene().objects
    ]
    assert short_caption(scene()) == "a heart next to a small key on a yellow background"
    assert short_caption(s) == "a key next to a small heart on a yellow background"


def test_probe_scenes_are_canonical_pairs_of_two_different_emoji():
    scenes = role_scenes(6)
    assert scenes == role_scenes(6)  # seeded
    assert all(len(s.objects) == 2 and s.objects[0].name != s.objects[1].name for s in scenes)
    assert all(" next to " in short_caption(s) or " above " in short_caption(s) for s in scenes)
    for i, s in enumerate(scenes):  # renamed: the same places, two emoji of another scene, neither of its own
        r = renamed(s, other_pair(scenes, i))
        assert [(o.x, o.y) for o in r.objects] == [(o.x, o.y) for o in s.objects]
        assert not {o.name for o in r.objects} & {o.name for o in s.objects}
    with pytest.raises(ValueError, match="no scene shares no emoji"):
        other_pair([scene(), swapped_names(scene())], 0)


def probe(model, swapped_features):
    """A hand-made probe set: 3 latents of 4x8x8, captions of 6 tokens; the objects fill the left half."""
    g = torch.Generator().manual_seed(0)
    true = torch.randn(3, 6, model.cfg.caption_channels, generator=g)
    mask = torch.ones(3, 6, dtype=torch.bool)
    region = torch.zeros(3, 1, 8, 8)
    region[..., :4] = 1
    return {
        "latent": torch.randn(3, 4, 8, 8, generator=g),
        "region": region,
        "true": (true, mask),
        "swapped": (swapped_features(true), mask),
        "renamed": (true + 2.0, mask),
        "rolled": (torch.roll(true, 1, 0), mask),
    }


def test_a_reordered_caption_is_the_same_caption_to_the_transformer():
    """Cross-attention reads caption tokens as a set (no positions of its own): the same features in another order
    give exactly the same prediction, so the role gain is 0, while a caption that says something else is not."""
    model = randomize(PixArtSigma(tiny_config())).eval()
    order = torch.tensor([3, 4, 5, 0, 1, 2])
    for row in role_gain(model, probe(model, lambda f: f[:, order]), timesteps=(500, 900)):
        assert row["role_gain_pct"] == pytest.approx(0.0, abs=1e-4)
        assert abs(row["caption_gain_pct"]) > 1e-2 and abs(row["names_gain_pct"]) > 1e-2
    other = role_gain(model, probe(model, lambda f: f + 1.0), timesteps=(500,))[0]
    assert abs(other["role_gain_pct"]) > 1e-2


def test_the_gain_only_looks_inside_the_objects_boxes():
    """A model 0.5 off inside the region with the true caption, just as far off there with the swapped one but wrong
    outside it too, 1.5 off inside with the rolled one and 1.0 with the renamed one: role gain 0, caption gain
    (1.5² - 0.5²) / 0.5² = 800%, names gain (1 - 0.5²) / 0.5² = 300%."""

    def model(xt, t, caption, mask):
        out = torch.zeros(len(xt), 8, *xt.shape[2:])
        out[:, :4] = torch.randn(xt.shape, generator=torch.Generator().manual_seed(int(t[0])))  # the probe's noise
        off = {"rolled": 1.5, "renamed": 1.0}
        out[:, :4, :, :4] += next((v for k, v in off.items() if torch.equal(caption, probe_set[k][0])), 0.5)
        if torch.equal(caption, probe_set["swapped"][0]):
            out[:, :4, :, 4:] += 1.0
        return out

    probe_set = probe(PixArtSigma(tiny_config()), lambda f: f + 1.0)
    for row in role_gain(model, probe_set, timesteps=(500, 900)):
        assert row["mse_true"] == pytest.approx(0.25) and row["mse_swapped"] == pytest.approx(0.25)
        assert row["role_gain_pct"] == pytest.approx(0.0, abs=1e-4)
        assert row["caption_gain_pct"] == pytest.approx(800.0) and row["names_gain_pct"] == pytest.approx(300.0)
        assert row["role_share"] == pytest.approx(0.0, abs=1e-6)


def test_bad_paths_and_arguments_are_refused(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="no such weights file"):
        weights_of(tmp_path / "missing.safetensors")
    with pytest.raises(FileNotFoundError, match="no checkpoints"):
        weights_of(tmp_path)
    with pytest.raises(SystemExit) as e:
        main([str(tmp_path / "missing.safetensors")])
    assert e.value.code == 2 and "no such weights file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([str(tmp_path), "-n", "1"])


def test_a_checkpoint_file_reads_its_runs_encoders(tmp_path):
    ema = tmp_path / "run" / "checkpoints" / "step-00000200" / "ema.safetensors"
    ema.parent.mkdir(parents=True)
    ema.write_bytes(b"")
    (ema.parent / "trainer.json").write_text("{}")  # a complete checkpoint
    (tmp_path / "run" / "config.json").write_text("{}")
    assert weights_of(ema) == [(str(ema), ema, tmp_path / "run")]
    assert [label for label, _, _ in weights_of(tmp_path / "run", ema=True)] == ["step-00000200"]
    assert weights_of(tmp_path / "run", ema=True)[0][1] == ema


def test_the_command_on_a_saved_run_writes_one_row_per_timestep(tmp_path):
    """End to end: emoji scenes rendered, encoded by the run's own (tiny) T5 and VAE, scored, appended to a CSV."""
    import csv
    import json

    from test_train import save_text_encoder_and_vae

    from pixart.checkpoint import save_transformer

    t5, vae = save_text_encoder_and_vae(tmp_path / "encoders", width=16)
    run = tmp_path / "run"
    save_transformer(
        randomize(PixArtSigma(tiny_config(sample_size=32, max_tokens=20))).eval(), run / "final.safetensors"
    )
    (run / "config.json").write_text(json.dumps({"data": {"text_encoder": str(t5), "vae": str(vae)}}))
    out = tmp_path / "roles.csv"
    assert main([str(run / "final.safetensors"), "-n", "2", "--timesteps", "500,900", "--csv", str(out)]) == 0
    with out.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["t"]) for r in rows] == [500, 900]
    assert all(r["weights"] == str(run / "final.safetensors") for r in rows)
    assert all(abs(float(r["role_gain_pct"])) < 1e6 and float(r["mse_true"]) > 0 for r in rows)


def test_scenes_resized_for_a_128_px_stage_keep_their_boxes(tmp_path, capsys):
    """--side 128: half the latent grid, and the boxes' cells are the 256 px grid's max-pooled by 2 (a 16 px cell
    is touched when either of its 8 px halves is); the captions do not change. A side that no bucket has is
    refused."""
    from test_train import save_text_encoder_and_vae

    from pixart.demo.role_probe import encode_probe_set

    t5, vae = save_text_encoder_and_vae(tmp_path / "encoders", width=16)
    scenes = role_scenes(2)
    full = encode_probe_set(scenes, t5, vae, 20)
    half = encode_probe_set(scenes, t5, vae, 20, side=128)
    assert full["latent"].shape[-1] == 2 * half["latent"].shape[-1]
    assert torch.equal(half["region"], torch.nn.functional.max_pool2d(full["region"], 2))
    assert 0 < half["region"].mean() < 1
    assert torch.equal(half["swapped"][0], full["swapped"][0])
    with pytest.raises(SystemExit):
        main([str(tmp_path), "--side", "100"])
    assert "--side 100" in capsys.readouterr().err
