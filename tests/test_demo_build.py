"""The whole demo recipe at toy scale: data -> T5 -> VAE -> caches -> three DiT stages -> package -> generate.

Slow (minutes on 2 cores): run with `pytest --runslow tests/test_demo_build.py`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pixart.demo.carry import CARRY


@pytest.mark.slow
def test_smoke_build_produces_a_pipeline_folder_that_generates(tmp_path):
    from PIL import Image

    from pixart.cli import main as cli
    from pixart.demo.build import DIT_STAGES, STAGES, main

    package = tmp_path / "package"
    assert main(["--smoke", "--root", str(tmp_path / "root"), "--package-dir", str(package)]) == 0
    for part in ("model_index.json", "transformer", "text_encoder", "tokenizer", "vae", "scheduler"):
        assert (package / part).exists(), part
    times = [json.loads(line)["stage"] for line in (tmp_path / "root" / "build-times.jsonl").read_text().splitlines()]
    assert times == list(STAGES)
    assert all((tmp_path / "root" / f"dit-{s}" / "loss.png").is_file() for s in DIT_STAGES)
    lesson = [json.loads(line)["scene"] for line in (tmp_path / "root" / "data-lesson" / "metadata.jsonl").open()]
    assert lesson and all(len(scene["objects"]) == 1 for scene in lesson)
    trained = json.loads((tmp_path / "root" / "dit-lesson" / "config.json").read_text())
    assert trained["timestep_high_fraction"] == 1.0 and trained["data"]["long_caption_ratio"] == 0.0
    assert trained["model"]["init_from"].endswith("dit-base/final-raw.safetensors")
    # The retext stages start from the kv stage and read the second text encoder, trained on the first's tokenizer:
    # the identity lesson (one large emoji in the middle) first, then the one-object lesson.
    retext = json.loads((tmp_path / "root" / "dit-retext-centre" / "config.json").read_text())
    assert retext["model"]["init_from"].endswith("dit-kv/final.safetensors") and retext["timestep_high_fraction"] == 0
    assert retext["data"]["text_encoder"].endswith("export-v2") and retext["data"]["cache"].endswith("centre-v2")
    centre = [json.loads(line)["scene"] for line in (tmp_path / "root" / "data-centre" / "metadata.jsonl").open()]
    assert centre and all([o["position"] for o in scene["objects"]] == ["center"] for scene in centre)
    lesson2 = json.loads((tmp_path / "root" / "dit-retext-lesson" / "config.json").read_text())
    assert lesson2["model"]["init_from"].endswith("dit-retext-centre/final-raw.safetensors")
    assert lesson2["data"]["cache"].endswith("lesson-v2")
    mix = json.loads((tmp_path / "root" / "dit-retext-mix" / "config.json").read_text())  # three worlds at once
    assert mix["model"]["init_from"].endswith("dit-retext-full/final-raw.safetensors")
    assert [Path(c).name for c in [mix["data"]["cache"], *mix["data"]["mix"]]] == [
        "cache-128-v2", "cache-lesson-v2", "cache-centre-v2"
    ] and mix["data"]["mix_repeats"] == [1, 2]  # fmt: skip
    v2 = json.loads((tmp_path / "root" / "text_encoder-v2" / "train_config.json").read_text())
    assert v2["word_identity_weight"] == v2["context_invariance_weight"] == 1.0
    # The layout stages: the fourth T5 fine-tunes the second's checkpoint; retext-mix's EMA learns to read it.
    v4 = json.loads((tmp_path / "root" / "text_encoder-v4" / "train_config.json").read_text())
    assert v4["layout_weight"] == 2.0 and v4["init_from"].endswith("text_encoder-v2/checkpoint.pt")
    assert v4["position_init"] == [[0, -1, 10.0], [2, 1, 10.0]]
    layout = json.loads((tmp_path / "root" / "dit-layout-mix" / "config.json").read_text())
    assert layout["model"]["init_from"].endswith("dit-retext-mix/final.safetensors")
    assert [Path(c).name for c in [layout["data"]["cache"], *layout["data"]["mix"]]] == [
        "cache-128-v4", "cache-lesson-v4", "cache-centre-v4"
    ] and layout["data"]["text_encoder"].endswith("export-v4")  # fmt: skip
    root = tmp_path / "root"
    # draw-snap: the one- and two-object worlds with each emoji at one fixed place, its corner on the token grid.
    for world, objects in (("lesson", {1}), ("pair", {2})):
        folder = root / f"data-{world}-256-snap"
        assert json.loads((folder / "dataset.json").read_text())["snap"] == 16
        scenes = [json.loads(line)["scene"] for line in (folder / "metadata.jsonl").open()]
        assert {len(scene["objects"]) for scene in scenes} == objects
        assert all(o["box"][0] % 16 == o["box"][1] % 16 == 0 for scene in scenes for o in scene["objects"])
    snap = json.loads((root / "dit-draw-snap" / "config.json").read_text())
    assert snap["model"]["init_from"].endswith("dit-draw-hires/final.safetensors")
    assert [Path(c).name for c in [snap["data"]["cache"], *snap["data"]["mix"]]] == [
        "cache-lesson-256-snap-v2", "cache-centre-256-v2", "cache-pair-256-snap-v2"
    ]  # fmt: skip
    # draw-canon: the two- and three-object worlds in one set of cells per arrangement, snapped.
    for world, objects in (("pair", {2}), ("multi", {3}), ("pair2", {2})):
        folder = root / f"data-{world}-256-canon"
        assert json.loads((folder / "dataset.json").read_text())["layout"] == "canonical"
        scenes = [json.loads(line)["scene"] for line in (folder / "metadata.jsonl").open()]
        assert {len(scene["objects"]) for scene in scenes} == objects
    canon = json.loads((root / "dit-draw-canon" / "config.json").read_text())
    assert canon["model"]["init_from"].endswith("dit-draw-snap/final.safetensors")
    assert [Path(c).name for c in canon["data"]["mix"]] == [
        "cache-centre-256-v2", "cache-pair-256-canon-v2", "cache-multi-256-canon-v2"
    ]  # fmt: skip
    # draw-pairs: a second canonical pair world (another seed) as the main cache, the lone-emoji world twice.
    pair, pair2 = ([json.loads(line)["caption"] for line in (root / f"data-{w}-256-canon" / "metadata.jsonl").open()]
                   for w in ("pair", "pair2"))  # fmt: skip
    assert pair != pair2
    # bind-canon: draw-pairs' worlds and shares, re-cached through the fifth T5, from draw-pairs' EMA.
    for stage, start, v in (("draw-pairs", "draw-canon", "v2"), ("bind-canon", "draw-pairs", "v5")):
        cfg = json.loads((root / f"dit-{stage}" / "config.json").read_text())
        assert cfg["model"]["init_from"].endswith(f"dit-{start}/final.safetensors")
        worlds = ("pair2-256-canon", "lesson-256-snap", "centre-256", "pair-256-canon", "multi-256-canon")
        caches = [cfg["data"]["cache"], *cfg["data"]["mix"]]
        assert [Path(c).name for c in caches] == [f"cache-{w}-{v}" for w in worlds]
        assert cfg["data"]["mix_repeats"] == [2, 1, 1, 1] and cfg["data"]["text_encoder"].endswith(f"export-{v}")
        assert all((root / f"cache-{w}-{v}").is_dir() for w in worlds)
    # scratch-aspect: the same five worlds drawn at the four non-square 256 px bucket sizes, beside the square ones.
    non_square = {(320, 192), (192, 320), (288, 224), (224, 288)}
    for world, objects in (("lesson-256-snap", {1}), ("centre-256", {1}), ("pair-256-canon", {2}),
                           ("multi-256-canon", {3}), ("pair2-256-canon", {2})):  # fmt: skip
        square = json.loads((root / f"data-{world}" / "dataset.json").read_text())
        settings = json.loads((root / f"data-{world}-aspect" / "dataset.json").read_text())
        assert {k: v for k, v in settings.items() if k not in ("seed", "sizes")} == {
            k: v for k, v in square.items() if k not in ("seed", "sizes")
        }, world  # the square world's settings, at other sizes and from another seed
        assert settings["seed"] != square["seed"] and {tuple(s) for s in settings["sizes"]} == non_square
        scenes = [json.loads(line) for line in (root / f"data-{world}-aspect" / "metadata.jsonl").open()]
        assert {(r["width"], r["height"]) for r in scenes} == non_square, world
        assert {len(r["scene"]["objects"]) for r in scenes} == objects, world
    aspect = json.loads((root / "dit-scratch-aspect" / "config.json").read_text())
    assert aspect["model"]["init_from"].endswith("dit-scratch-hires/final.safetensors")
    assert [Path(c).name for c in aspect["data"]["mix"][4:]] == [
        f"cache-{w}-aspect-v5" for w in ("pair2-256-canon", "lesson-256-snap", "centre-256", "pair-256-canon",
                                         "multi-256-canon")
    ]  # fmt: skip
    # aspect-canon / aspect-hires: the scratch line again on those square and non-square worlds from the first step,
    # at 128 px (the non-square scenes resized to the 128 px bucket sizes) and then at 256 px.
    canon, hires = (json.loads((root / f"dit-aspect-{s}" / "config.json").read_text()) for s in ("canon", "hires"))
    assert not canon["model"].get("init_from") and canon["data"]["resolution"] == 128
    assert hires["model"]["init_from"].endswith("dit-aspect-canon/final.safetensors")
    assert (
        hires["data"]["mix"] == aspect["data"]["mix"] and hires["data"]["mix_repeats"] == aspect["data"]["mix_repeats"]
    )
    assert [Path(c).name for c in canon["data"]["mix"]] == [
        Path(c).name.replace("-256", "-128") for c in aspect["data"]["mix"]
    ] and canon["data"]["text_encoder"].endswith("export-v5")
    for world in ("lesson-128-snap", "pair2-128-canon"):
        index = json.loads((root / f"cache-{world}-aspect-v5" / "index.json").read_text())
        bins = index["settings"]["bins"]  # bucket -> [h, w]
        sizes = {(bins[r[2]][1], bins[r[2]][0]) for shard in index["shards"] for r in shard["rows"]}
        assert sizes == {(w // 2, h // 2) for w, h in non_square}, (world, sizes)
    for name in ("spiece.model", "tokenizer_config.json"):
        assert (root / "export-v2" / "tokenizer" / name).read_bytes() == (
            root / "export" / "tokenizer" / name
        ).read_bytes()
    config = json.loads((package / "transformer" / "config.json").read_text())
    # The package ships aspect-hires (256 px, no KV compression); the KV stages, not shipped, have it on blocks 4-7.
    assert not config.get("kv_compress_layers") and config["sample_size"] == 32
    for stage, previous in (("scratch-kv", "scratch-hires"), ("aspect-kv", "aspect-hires")):
        kv = json.loads((root / f"dit-{stage}" / "config.json").read_text())
        assert kv["model"]["kv_compress_layers"] == [4, 5, 6, 7], stage
        assert kv["model"]["init_from"].endswith(f"dit-{previous}/final.safetensors"), stage
    assert kv["data"]["mix"] == hires["data"]["mix"]  # aspect-kv: aspect-hires' square and non-square buckets
    # The recipe trains v-prediction (configs/demo/base.toml); transformer and scheduler both say so.
    scheduler = json.loads((package / "scheduler" / "scheduler_config.json").read_text())
    assert config["prediction_type"] == scheduler["prediction_type"] == "v_prediction"
    out = tmp_path / "img.png"
    assert (
        cli(
            ["generate", "a red apple", "--model", str(package), "--steps", "2", "--aspect", "16:9", "--out", str(out)]
        )
        == 0
    )
    assert Image.open(out).size == (336, 192)
    # A second run finds every training stage done and only repackages.
    assert main(["--smoke", "--root", str(tmp_path / "root"), "--package-dir", str(package)]) == 0
    times = [json.loads(line)["stage"] for line in (tmp_path / "root" / "build-times.jsonl").read_text().splitlines()]
    assert times == [*STAGES, "package"]

    # An interim package from a stage still running: its latest checkpoint, with the step in the model card.
    (tmp_path / "root" / "dit-hires" / "final.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="--export-latest hires"):
        main(["--smoke", "--root", str(tmp_path / "root"), "--stages", "package", "--package-from", "hires"])
    assert main(["--smoke", "--root", str(tmp_path / "root"), "--export-latest", "hires"]) == 0
    interim = tmp_path / "interim"
    args = ["--stages", "package", "--package-from", "hires", "--package-dir", str(interim)]
    assert main(["--smoke", "--root", str(tmp_path / "root"), *args]) == 0
    card = (interim / "README.md").read_text()
    assert "stage 2 of 3" in card and "at step 2" in card
    assert not json.loads((interim / "transformer" / "config.json").read_text()).get("kv_compress_layers")


def test_a_finished_stage_trains_on_when_its_max_steps_is_raised(tmp_path, monkeypatch):
    import pixart.demo.build as build
    import pixart.train.loop as loop

    calls = []
    monkeypatch.setattr(loop, "main", lambda cfg: calls.append(cfg.max_steps))
    monkeypatch.setattr(build, "export_latest", lambda run_dir, dst, ema=True: calls.append(("export", ema)))
    checkpoints = tmp_path / "dit-base" / "checkpoints"
    (checkpoints / "step-00000001").mkdir(parents=True)
    (checkpoints / "step-00000001" / "trainer.json").write_text(json.dumps({"step": 1}))
    (tmp_path / "dit-base" / "final.safetensors").write_bytes(b"")

    build.stage_train(tmp_path, "base", smoke=True)  # final is from step 1, the smoke config asks for 2
    assert calls == [2, ("export", True), ("export", False)]

    (checkpoints / "step-00000002").mkdir()
    (checkpoints / "step-00000002" / "trainer.json").write_text(json.dumps({"step": 2}))
    calls.clear()
    build.stage_train(tmp_path, "base", smoke=True)  # finished: skipped
    assert calls == []


def test_set_overrides_reach_their_stage_and_bad_ones_are_refused(tmp_path, monkeypatch, capsys):
    import pixart.demo.build as build
    import pixart.train.loop as loop

    seen = []
    monkeypatch.setattr(loop, "main", lambda cfg: seen.append((cfg.batch_size, cfg.max_steps)))
    monkeypatch.setattr(build, "export_latest", lambda run_dir, dst, ema=True: None)
    argv = ["--root", str(tmp_path), "--smoke", "--stages", "base", "--set", "base.batch_size=8", "--set", "kv.lr=1"]
    assert build.main(argv) == 0
    assert seen == [(8, 2)]  # the smoke config's max_steps, the override's batch size

    for bad in ("vae.batch_size=8", "base.batch_size", "base"):
        with pytest.raises(SystemExit) as exit_info:
            build.main(["--root", str(tmp_path), "--stages", "base", "--set", bad])
        assert exit_info.value.code == 2
        assert f"--set {bad!r}" in capsys.readouterr().err
    expected = {stage: [] for stage in build.DIT_STAGES} | {"hires": ["batch_size=4"], "retext-kv": ["lr=1e-4"]}
    assert build.split_overrides(["hires.batch_size=4", "retext-kv.lr=1e-4"]) == expected


def test_the_base_stage_resumes_in_segments_with_their_settings(tmp_path, monkeypatch):
    import pixart.demo.build as build
    import pixart.train.loop as loop

    runs = []
    monkeypatch.setattr(
        loop, "main", lambda cfg: runs.append((cfg.max_steps, cfg.timestep_high_fraction, cfg.mixed_precision))
    )
    monkeypatch.setattr(build, "export_latest", lambda run_dir, dst, ema=True: None)
    monkeypatch.setattr(build, "plot_losses", lambda run_dir, stage: None)
    build.stage_train(tmp_path, "base", smoke=False)
    assert [r[0] for r in runs] == [until for until, _ in build.BASE_SEGMENTS]
    assert runs[0] == (5000, 0.0, "no") and runs[1] == (12800, 0.0, "bf16")
    assert runs[-1] == (23000, 0.75, "bf16")

    checkpoints = tmp_path / "dit-base" / "checkpoints" / "step-00016000"  # resumed after the third segment
    checkpoints.mkdir(parents=True)
    (checkpoints / "trainer.json").write_text(json.dumps({"step": 16000}))
    runs.clear()
    build.stage_train(tmp_path, "base", smoke=False, extra=["max_steps=20000", "mixed_precision=no"])
    assert runs == [(20000, 0.5, "no")]  # only what is left, up to the new end; the user's --set wins
    runs.clear()
    build.stage_train(tmp_path, "lesson", smoke=False)
    assert runs == [(1500, 1.0, "no")]


def test_a_carried_stage_is_restored_instead_of_trained(tmp_path):
    import torch

    import pixart.demo.build as build
    from pixart.checkpoint import load_transformer, save_transformer
    from pixart.model import PixArtSigma
    from tests.conftest import randomize, tiny_config

    run = tmp_path / "dit-lesson"
    run.mkdir()
    # What is carried is what the next stage reads: the full stage starts from the lesson's EMA ("final"); a stage
    # nothing starts from (draw-canon) carries its EMA, which is what is scored and packaged
    assert [build.carried_weights(s) for s in ("lesson", "retext-lesson", "retext-mix", "draw-canon")] == [
        "final", "final-raw", "final", "final"
    ]  # fmt: skip
    model = randomize(PixArtSigma(tiny_config()), 0)
    save_transformer(model, run / "final.safetensors")
    save_transformer(randomize(PixArtSigma(tiny_config()), 1), run / "final-raw.safetensors")
    assert build.main(["--root", str(tmp_path), "--carry", "lesson"]) == 0
    (run / "final-raw.safetensors").unlink()
    (run / "final.safetensors").unlink()
    (tmp_path / "lesson.done").write_text("{}")
    ran = []
    build._timed(tmp_path, "lesson", lambda: ran.append(1))
    assert ran == []  # restored, not trained
    restored = load_transformer(run / "final.safetensors", dtype=torch.float32)
    assert load_transformer(run / "final-raw.safetensors").cfg == model.cfg
    for (name, a), b in zip(model.state_dict().items(), restored.state_dict().values(), strict=True):
        torch.testing.assert_close(b, a.half().float(), msg=name)
    (run / "final.safetensors").unlink()
    (run / CARRY).unlink()
    build._timed(tmp_path, "lesson", lambda: ran.append(2))  # nothing carried: trained again
    assert ran == [2]


def test_a_done_stage_whose_outputs_are_missing_runs_again(tmp_path):
    import pixart.demo.build as build

    ran = []
    (tmp_path / "cache-128.done").write_text("{}")  # committed with the logs; the cache itself is not
    build._timed(tmp_path, "cache-128", lambda: ran.append(1))
    assert ran == [1] and json.loads((tmp_path / "cache-128.done").read_text())["stage"] == "cache-128"
    (tmp_path / "cache-128").mkdir()
    (tmp_path / "cache-128" / "index.json").write_text("{}")
    build._timed(tmp_path, "cache-128", lambda: ran.append(2))  # done and there: skipped
    assert ran == [1]
    (tmp_path / "lesson.done").write_text("{}")
    build._timed(tmp_path, "lesson", lambda: ran.append(3))  # no dit-lesson/final.safetensors
    assert ran == [1, 3]


def test_a_committed_text_encoder_without_its_run_is_not_trained_again(tmp_path, monkeypatch):
    from pixart.demo import stages, text_encoder

    calls = []
    monkeypatch.setattr(text_encoder, "main", lambda args: calls.append(args) or 0)
    (tmp_path / "export" / "vae").mkdir(parents=True)
    (tmp_path / "export" / "vae" / "config.json").write_text("{}")
    (tmp_path / "export-v4" / "text_encoder").mkdir(parents=True)
    (tmp_path / "export-v4" / "text_encoder" / "config.json").write_text("{}")
    stages.stage_text_encoder_v2(tmp_path, False, "v4")  # a fresh clone: the export is committed, the run is not
    assert calls == [] and (tmp_path / "export-v4" / "vae" / "config.json").exists()
    (tmp_path / "text_encoder-v4").mkdir()
    (tmp_path / "text_encoder-v4" / "checkpoint.pt").write_bytes(b"")
    stages.stage_text_encoder_v2(tmp_path, False, "v4")  # with its run: resumed (and re-exported)
    (args,) = calls
    assert args[args.index("--init-from") + 1] == str(tmp_path / "text_encoder-v2" / "checkpoint.pt")
    assert "--layout-weight" in args and "--position-init" in args


def test_a_stage_reading_an_export_without_its_vae_copy_gets_one(tmp_path):
    """On a fresh clone export-v2/ holds the committed T5 but not its (ignored) copy of the VAE, and the text encoder
    stage that makes the copy is marked done: a cache or DiT stage rebuilt there copies it first."""
    from pixart.demo import stages

    (tmp_path / "export" / "vae").mkdir(parents=True)
    (tmp_path / "export" / "vae" / "config.json").write_text('{"latent_channels": 4}')
    (tmp_path / "export-v2" / "text_encoder").mkdir(parents=True)
    stages.ensure_export_vae(tmp_path, "export-v2")
    assert (tmp_path / "export-v2" / "vae" / "config.json").read_text() == '{"latent_channels": 4}'
    (tmp_path / "export-v2" / "vae" / "config.json").write_text("{}")  # an existing copy is left alone
    stages.ensure_export_vae(tmp_path, "export-v2")
    assert (tmp_path / "export-v2" / "vae" / "config.json").read_text() == "{}"
    stages.ensure_export_vae(tmp_path, "export")  # the VAE's own folder: nothing to copy
    assert sorted(p.name for p in (tmp_path / "export").iterdir()) == ["vae"]


def test_every_stage_of_the_recipe_has_exactly_one_runner(tmp_path):
    """`recipe.STAGES` is the build's order; each name is a preparation step, a DiT stage or the package, once."""
    from pixart.demo.recipe import DIT_STAGES, STAGES
    from pixart.demo.stages import preparation_steps

    runners = [*preparation_steps(tmp_path, smoke=True), *DIT_STAGES, "package"]
    assert sorted(runners) == sorted(STAGES)


def test_each_stage_config_says_what_the_recipe_tables_say():
    """A stage's TOML (what `pixart train --config` runs by hand) and the build's tables (what the build passes as
    overrides) name the same caches, text encoder and starting weights."""
    from pixart.demo.build import CACHE, DIT_STAGES, MIX, PREVIOUS, REPO
    from pixart.demo.package import STAGE_NOTE, export_for
    from pixart.train.config import load_train_config

    assert set(STAGE_NOTE) == set(DIT_STAGES)  # a package made from any stage says what its transformer is
    for stage in DIT_STAGES:
        cfg = load_train_config(REPO / "configs" / "demo" / f"{stage}.toml", [])
        root = "runs/demo"
        assert cfg.output_dir == f"{root}/dit-{stage}", stage
        assert cfg.data.cache == f"{root}/{CACHE[stage]}", stage
        assert cfg.data.text_encoder == f"{root}/{export_for(stage)}", stage
        assert cfg.data.vae == f"{root}/{export_for(stage)}/vae", stage
        mix = MIX.get(stage, ())
        assert list(cfg.data.mix or ()) == [f"{root}/{cache}" for cache, _ in mix], stage
        if mix:
            assert list(cfg.data.mix_repeats) == [repeats for _, repeats in mix], stage
        if stage in PREVIOUS:
            previous, weights = PREVIOUS[stage]
            assert cfg.model.init_from == f"{root}/dit-{previous}/{weights}.safetensors", stage
