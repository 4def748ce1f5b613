"""The demo build's preparation stages: the emoji datasets, the text encoders and the VAE, and `pixart prepare`'s
caches of them, plus the deepened model the deep-hires stage starts from. `pixart.demo.build` runs them in
`recipe.STAGES` order with its DiT stages and packaging, skipping those already done.

Each stage is one function of (root, smoke, ...); `preparation_steps` names them all as the build's stage names.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from pixart.demo.recipe import (
    GROW_AFTER,
    GROW_FROM,
    SCENES,
    SIZES_128,
    SIZES_256,
    SMOKE_SCENES,
    TEXT_ENCODER_V2,
    TEXT_ENCODER_V4,
    TEXT_ENCODER_V5,
)

logger = logging.getLogger(__name__)

# The five 256 px worlds of the bind and scratch stages (snapped singles, centred, canonical pairs and groups), each
# with how it is drawn besides its seed and sizes (`export_dataset`'s options): the square ones by their own stages,
# the other shapes by `stage_data_aspect`.
_CANONICAL = {"snap": 16, "layout": "canonical"}
CANON_OPTIONS = {
    "lesson-256-snap": {"max_objects": 1, "snap": 16},
    "centre-256": {"max_objects": 1, "centred": True},
    "pair-256-canon": {"min_objects": 2, "max_objects": 2, **_CANONICAL},
    "multi-256-canon": {"min_objects": 3, **_CANONICAL},
    "pair2-256-canon": {"min_objects": 2, "max_objects": 2, **_CANONICAL},
}
CANON_WORLDS = tuple(CANON_OPTIONS)


def stage_data(root: Path, smoke: bool) -> None:
    from pixart.data.emoji import export_dataset

    counts = SMOKE_SCENES if smoke else SCENES
    export_dataset(root / "data-128", counts["data-128"], seed=0, sizes=SIZES_128)
    export_dataset(root / "data-256", counts["data-256"], seed=1, sizes=SIZES_256)


def stage_data_lesson(root: Path, smoke: bool, side: int = 128) -> None:
    """The lesson's world: one emoji a scene, square 128 px (seed 2, apart from the other datasets' scenes);
    side 256: data-lesson-256, the same world at 256 px (seed 4), for the draw-kv stage."""
    from pixart.data.emoji import export_dataset

    counts = SMOKE_SCENES if smoke else SCENES
    name, seed = ("data-lesson", 2) if side == 128 else (f"data-lesson-{side}", 4)
    export_dataset(root / name, counts[name], seed=seed, sizes=((side, side),), max_objects=1)


def stage_data_snapped(root: Path, smoke: bool, world: str) -> None:
    """The 256 px one-object (world "lesson", seed 10) and two-object ("pair", seed 11) worlds with each emoji at
    one fixed place in its cell, its box corner on the 16 px token grid (`export_dataset(snap=16)`), for draw-snap."""
    from pixart.data.emoji import export_dataset

    counts = SMOKE_SCENES if smoke else SCENES
    name = f"data-{world}-256-snap"
    objects = {"lesson": {"max_objects": 1, "seed": 10}, "pair": {"min_objects": 2, "max_objects": 2, "seed": 11}}
    export_dataset(root / name, counts[name], sizes=((256, 256),), snap=16, **objects[world])


def stage_data_canonical(root: Path, smoke: bool, world: str) -> None:
    """The 256 px two-object (world "pair", seed 12) and three-object ("multi", seed 13) worlds, snapped as for
    draw-snap, with the emoji in one fixed set of cells per arrangement (`export_dataset(layout="canonical")`:
    side by side, one above the other, or a triangle of three), for draw-canon; "pair2" (seed 14): more scenes of
    the two-object world, for draw-pairs."""
    from pixart.data.emoji import export_dataset

    counts = SMOKE_SCENES if smoke else SCENES
    name = f"data-{world}-256-canon"
    seed = {"pair": 12, "multi": 13, "pair2": 14}[world]
    export_dataset(root / name, counts[name], seed=seed, sizes=((256, 256),), **CANON_OPTIONS[f"{world}-256-canon"])


def stage_data_aspect(root: Path, smoke: bool, world: str) -> None:
    """WORLD, one of `CANON_WORLDS`, drawn as its own stage draws it but at the four other 256 px bucket sizes
    (`SIZES_256[1:]`: 320x192, 192x320, 288x224, 224x288, in turn; seeds 20-24, apart from every other world), into
    data-WORLD-aspect, for scratch-aspect: the square worlds' scenes in the shapes `--aspect` asks for."""
    from pixart.data.emoji import export_dataset

    counts = SMOKE_SCENES if smoke else SCENES
    name = f"data-{world}-aspect"
    seed = 20 + CANON_WORLDS.index(world)
    export_dataset(root / name, counts[name], seed=seed, sizes=SIZES_256[1:], **CANON_OPTIONS[world])


def stage_data_centre(root: Path, smoke: bool, side: int = 128) -> None:
    """The identity lesson's world: one large emoji in the middle of a square 128 px scene (seed 3), so that
    only the emoji and the background change with the caption; side 256: data-centre-256, the same world at
    256 px (seed 8), for the 256 px stages."""
    from pixart.data.emoji import export_dataset

    counts = SMOKE_SCENES if smoke else SCENES
    name, seed = ("data-centre", 3) if side == 128 else (f"data-centre-{side}", 8)
    export_dataset(root / name, counts[name], seed=seed, sizes=((side, side),), max_objects=1, centred=True)


def stage_data_pair(root: Path, smoke: bool, side: int = 128) -> None:
    """The two-object world: every scene two emoji (two different ones, or two of a kind), square 128 px (seed 5):
    the eval's pair prompts and its counts of two, with no third object and no lone one; side 256: data-pair-256,
    the same world at 256 px (seed 6)."""
    from pixart.data.emoji import export_dataset

    counts = SMOKE_SCENES if smoke else SCENES
    name, seed = ("data-pair", 5) if side == 128 else (f"data-pair-{side}", 6)
    export_dataset(root / name, counts[name], seed=seed, sizes=((side, side),), min_objects=2, max_objects=2)


def stage_text_encoder(root: Path, smoke: bool) -> None:
    from pixart.demo import text_encoder

    args = ["--out", str(root / "export"), "--run-dir", str(root / "text_encoder"), "--resume"]
    if smoke:
        args += ["--steps", "2", "--corpus-scenes", "200", "--vocab-size", "300"]
    if text_encoder.main(args) != 0:
        raise RuntimeError("text encoder training failed; see its log")


def stage_text_encoder_v2(root: Path, smoke: bool, version: str = "v2") -> None:
    """The second T5: the same corpus and tokenizer (export/tokenizer), span corruption plus word identity and
    context invariance; export-v2/ gets it, the tokenizer and a copy of the VAE, so that it is a complete text
    encoder + VAE folder like export/. version "v4": the fourth T5 (`TEXT_ENCODER_V4`: the second's checkpoint
    fine-tuned with the layout loss) in export-v4/; "v5": the fifth (`TEXT_ENCODER_V5`: v4's recipe, the first 128
    channels held to the second's) in export-v5/."""
    import shutil

    from pixart.demo import text_encoder

    out = root / f"export-{version}"
    args = ["--out", str(out), "--run-dir", str(root / f"text_encoder-{version}"), "--resume"]
    args += ["--tokenizer", str(root / "export" / "tokenizer")]
    if version == "v4":
        args += [*TEXT_ENCODER_V4, "--init-from", str(root / "text_encoder-v2" / "checkpoint.pt")]
    elif version == "v5":
        args += [*TEXT_ENCODER_V5, "--init-from", str(root / "text_encoder-v2" / "checkpoint.pt")]
        args += ["--keep-from", str(root / "export-v2" / "text_encoder")]
    else:
        args += TEXT_ENCODER_V2
    if smoke:
        args += ["--steps", "2", "--corpus-scenes", "200"]
    committed = (out / "text_encoder" / "config.json").exists()
    if committed and not (root / f"text_encoder-{version}" / "checkpoint.pt").exists():
        logger.info("text encoder (%s): %s is there (committed), its run is not: only the VAE is copied", version, out)
    elif text_encoder.main(args) != 0:
        raise RuntimeError(f"text encoder ({version}) training failed; see its log")
    shutil.rmtree(out / "vae", ignore_errors=True)  # a retrained VAE replaces the copy
    ensure_export_vae(root, out.name)


def ensure_export_vae(root: Path, export: str) -> None:
    """Give export-vN/ its copy of the VAE when it lacks one: the copy is not committed, so on a fresh clone a
    text encoder stage marked done never made it, and a cache or DiT stage rebuilt there would find no VAE."""
    import shutil

    out = root / export / "vae"
    if export != "export" and not out.exists() and (root / "export" / "vae").exists():
        logger.info("copying export/vae to %s", out)
        shutil.copytree(root / "export" / "vae", out)


def stage_vae(root: Path, smoke: bool) -> None:
    from pixart.demo import vae

    args = ["--out", str(root / "export"), "--run-dir", str(root / "vae"), "--resume"]
    if smoke:
        args += ["--steps", "2", "--batch-pixels", "16384"]
    if vae.main(args) != 0:
        raise RuntimeError("VAE training failed; see its log")


def stage_cache(
    root: Path,
    smoke: bool,
    res: int,
    *,
    device: str = "cpu",
    batch_size: int = 16,
    workers: int = 2,
    name: str | None = None,
    version: str = "",
    out: str | None = None,
) -> None:
    """`pixart prepare`'s cache of data-RES (T5 features, VAE latent mean/std); each DiT stage needs only its own.

    device / batch_size / workers: where the encoders run, images per encoder call, image-decoding threads.
    name: data-NAME -> cache-NAME instead of data-RES -> cache-RES (the lesson's world, at 128 px).
    version: "-v2": the second text encoder's features (export-v2/), written to cache-NAME-v2.
    out: cache-OUT{version} instead of cache-NAME{version}, for a world cached at another resolution than it was
        drawn at (the 256 px canonical worlds resized to 128 px for the scratch stage).
    """
    from pixart.data.buckets import bins_for
    from pixart.data.cache import T5AndVAE, prepare_cache

    export = root / f"export{version}"
    ensure_export_vae(root, export.name)
    encoders = T5AndVAE(export, export / "vae", max_tokens=120, device=device)  # export/: text_encoder/ + tokenizer/
    name = name or str(res)
    summary = prepare_cache(
        root / f"data-{name}",
        root / f"cache-{out or name}{version}",
        encoders,
        bins=bins_for(res),
        max_tokens=120,
        shard_size=64 if smoke else 1024,
        batch_size=batch_size,
        workers=workers,
    )
    logger.info("cache-%s%s on %s: %s", out or name, version, device, summary)


def stage_grow(root: Path) -> None:
    """dit-grow/final.safetensors: `GROW_FROM`'s weights deepened with identity blocks after `GROW_AFTER`
    (`pixart.demo.grow`): the same outputs, more blocks to train (the deep-hires stage)."""
    import torch

    from pixart.checkpoint import load_transformer, save_transformer
    from pixart.demo.grow import grow

    stage, weights = GROW_FROM
    model = load_transformer(root / f"dit-{stage}" / f"{weights}.safetensors", dtype=torch.float32)
    save_transformer(grow(model, list(GROW_AFTER)), root / "dit-grow" / "final.safetensors")


def preparation_steps(root: Path, smoke: bool) -> dict[str, Callable[[], None]]:
    """Every stage before the DiT stages (and "grow"), by its name in `recipe.STAGES`, bound to ROOT."""
    return {
        "data": lambda: stage_data(root, smoke),
        "text_encoder": lambda: stage_text_encoder(root, smoke),
        "vae": lambda: stage_vae(root, smoke),
        "cache-128": lambda: stage_cache(root, smoke, 128),
        "data-lesson": lambda: stage_data_lesson(root, smoke),
        "cache-lesson": lambda: stage_cache(root, smoke, 128, name="lesson"),
        "cache-256": lambda: stage_cache(root, smoke, 256),
        "text_encoder-v2": lambda: stage_text_encoder_v2(root, smoke),
        "data-centre": lambda: stage_data_centre(root, smoke),
        "cache-centre-v2": lambda: stage_cache(root, smoke, 128, name="centre", version="-v2"),
        "cache-lesson-v2": lambda: stage_cache(root, smoke, 128, name="lesson", version="-v2"),
        "cache-128-v2": lambda: stage_cache(root, smoke, 128, version="-v2"),
        "cache-256-v2": lambda: stage_cache(root, smoke, 256, version="-v2"),
        "text_encoder-v4": lambda: stage_text_encoder_v2(root, smoke, "v4"),
        "cache-centre-v4": lambda: stage_cache(root, smoke, 128, name="centre", version="-v4"),
        "cache-lesson-v4": lambda: stage_cache(root, smoke, 128, name="lesson", version="-v4"),
        "cache-128-v4": lambda: stage_cache(root, smoke, 128, version="-v4"),
        "cache-256-v4": lambda: stage_cache(root, smoke, 256, version="-v4"),
        "text_encoder-v5": lambda: stage_text_encoder_v2(root, smoke, "v5"),
        "cache-centre-v5": lambda: stage_cache(root, smoke, 128, name="centre", version="-v5"),
        "cache-lesson-v5": lambda: stage_cache(root, smoke, 128, name="lesson", version="-v5"),
        "cache-128-v5": lambda: stage_cache(root, smoke, 128, version="-v5"),
        "data-lesson-256": lambda: stage_data_lesson(root, smoke, 256),
        "cache-lesson-256-v2": lambda: stage_cache(root, smoke, 256, name="lesson-256", version="-v2"),
        "data-pair": lambda: stage_data_pair(root, smoke),
        "cache-pair-v2": lambda: stage_cache(root, smoke, 128, name="pair", version="-v2"),
        "data-pair-256": lambda: stage_data_pair(root, smoke, 256),
        "cache-pair-256-v2": lambda: stage_cache(root, smoke, 256, name="pair-256", version="-v2"),
        "data-centre-256": lambda: stage_data_centre(root, smoke, 256),
        "cache-centre-256-v2": lambda: stage_cache(root, smoke, 256, name="centre-256", version="-v2"),
        "data-lesson-256-snap": lambda: stage_data_snapped(root, smoke, "lesson"),
        "data-pair-256-snap": lambda: stage_data_snapped(root, smoke, "pair"),
        "cache-lesson-256-snap-v2": lambda: stage_cache(root, smoke, 256, name="lesson-256-snap", version="-v2"),
        "cache-pair-256-snap-v2": lambda: stage_cache(root, smoke, 256, name="pair-256-snap", version="-v2"),
        "data-pair-256-canon": lambda: stage_data_canonical(root, smoke, "pair"),
        "data-multi-256-canon": lambda: stage_data_canonical(root, smoke, "multi"),
        "cache-pair-256-canon-v2": lambda: stage_cache(root, smoke, 256, name="pair-256-canon", version="-v2"),
        "cache-multi-256-canon-v2": lambda: stage_cache(root, smoke, 256, name="multi-256-canon", version="-v2"),
        "data-pair2-256-canon": lambda: stage_data_canonical(root, smoke, "pair2"),
        "cache-pair2-256-canon-v2": lambda: stage_cache(root, smoke, 256, name="pair2-256-canon", version="-v2"),
        **{
            f"cache-{world}-v5": (lambda world=world: stage_cache(root, smoke, 256, name=world, version="-v5"))
            for world in CANON_WORLDS
        },
        # The same five worlds at 128 px (resized from their 256 px renders), for scratch-canon.
        **{
            f"cache-{world.replace('-256', '-128')}-v5": (
                lambda world=world: stage_cache(
                    root, smoke, 128, name=world, version="-v5", out=world.replace("-256", "-128")
                )
            )
            for world in CANON_WORLDS
        },
        # The same five worlds drawn at the other four 256 px bucket sizes, for scratch-aspect.
        **{f"data-{w}-aspect": (lambda w=w: stage_data_aspect(root, smoke, w)) for w in CANON_WORLDS},
        **{
            f"cache-{world}-aspect-v5": (
                lambda world=world: stage_cache(root, smoke, 256, name=f"{world}-aspect", version="-v5")
            )
            for world in CANON_WORLDS
        },
        # And those non-square scenes at 128 px (each 256 px bucket size halves to a 128 px one), for aspect-canon.
        **{
            f"cache-{world.replace('-256', '-128')}-aspect-v5": (
                lambda world=world: stage_cache(
                    root,
                    smoke,
                    128,
                    name=f"{world}-aspect",
                    version="-v5",
                    out=f"{world.replace('-256', '-128')}-aspect",
                )
            )
            for world in CANON_WORLDS
        },
        "grow": lambda: stage_grow(root),
    }
