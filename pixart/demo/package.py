"""The demo build's last stage: the DiT stage's final weights, the demo T5 and VAE and a scheduler, written as a
diffusers-layout pipeline folder (what `pixart generate` loads when no `--model` is given).

    python -m pixart.demo.build --stages package                        # the finished recipe (kv stage)
    python -m pixart.demo.build --stages package --package-from full    # an earlier stage, e.g. to compare
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

logger = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).resolve().parent.parent / "assets" / "demo"


# Which T5 export each family of DiT stages reads, by the stage name's first word.
EXPORTS = {
    "retext": "export-v2",
    "draw": "export-v2",
    "pair": "export-v2",
    "deep": "export-v2",
    "layout": "export-v4",
    "bind": "export-v5",
    "scratch": "export-v5",
    "aspect": "export-v5",
}


def export_for(stage: str) -> str:
    """The folder under ROOT with the text encoder, tokenizer and VAE a DiT stage reads: the retext, draw, pair and
    deep stages read the second T5 (export-v2/), the layout stages the fourth (export-v4/), the bind stages the fifth
    (export-v5/), as do the scratch and aspect stages; every other stage the first (export/)."""
    return EXPORTS.get(stage.partition("-")[0], "export")


def stage_package(root: Path, smoke: bool, dst: Path = PACKAGE_DIR, source: str = "aspect-hires") -> None:
    """Write a diffusers-layout folder: model_index.json, transformer/ (fp16), text_encoder/, tokenizer/, vae/,
    scheduler/. `source` picks the DiT stage whose final weights ship (aspect-hires: the v14 package; scratch-hires:
    v13; scratch-canon: v12; draw-pairs: v11)."""
    import torch

    from pixart.checkpoint import load_transformer, write_checkpoint
    from pixart.config import SCHEDULER_PREDICTION

    final = root / f"dit-{source}" / "final.safetensors"
    note = STAGE_NOTE[source]
    if not final.exists():  # a run in progress: ship the snapshot `--export-latest` wrote, and say so
        latest = final.with_name("latest.safetensors")
        if not latest.exists():
            raise FileNotFoundError(f"{final} does not exist (stage {source} has not finished); "
                                    f"`--export-latest {source}` writes a snapshot of a run in progress")  # fmt: skip
        step = json.loads(latest.with_suffix(".json").read_text())["step"]
        final, note = latest, note + SNAPSHOT_NOTE.format(step=step)
        logger.warning("stage %s has not finished: packaging its step-%d snapshot %s", source, step, latest)
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model = load_transformer(final, dtype=torch.float16)
    write_checkpoint(model, tmp / "transformer", "diffusers")
    export = root / export_for(source)  # the T5 the stage read
    for part in ("text_encoder", "tokenizer", "vae"):
        shutil.copytree(export / part, tmp / part)
    scheduler = {
        "_class_name": "DPMSolverMultistepScheduler",
        "algorithm_type": "dpmsolver++",
        "solver_order": 2,
        "solver_type": "midpoint",
        "beta_schedule": "linear",
        "beta_start": 0.0001,
        "beta_end": 0.02,
        "num_train_timesteps": 1000,
        "prediction_type": SCHEDULER_PREDICTION[model.cfg.prediction],
        "timestep_spacing": "linspace",
        "lower_order_final": True,
    }
    (tmp / "scheduler").mkdir()
    (tmp / "scheduler" / "scheduler_config.json").write_text(json.dumps(scheduler, indent=2))
    index = {
        "_class_name": "PixArtSigmaPipeline",
        "transformer": ["diffusers", "PixArtTransformer2DModel"],
        "text_encoder": ["transformers", "T5EncoderModel"],
        "tokenizer": ["transformers", "T5Tokenizer"],
        "vae": ["diffusers", "AutoencoderKL"],
        "scheduler": ["diffusers", "DPMSolverMultistepScheduler"],
    }
    (tmp / "model_index.json").write_text(json.dumps(index, indent=2))
    (tmp / "README.md").write_text(MODEL_CARD + note)
    if dst.exists():
        shutil.rmtree(dst)
    tmp.rename(dst)
    logger.info("packaged the demo model in %s", dst)


MODEL_CARD = """# pixart-sigma demo model

A small PixArt-Σ (transformer, T5 encoder, VAE) trained from scratch by `python -m pixart.demo.build` on
"emoji world" scenes: 1-3 emoji at described positions and sizes on a coloured background.

The emoji artwork is OpenMoji (https://openmoji.org), licensed CC BY-SA 4.0; the training images are
derived from it, and so are these weights: share them under the same licence, with this credit.

How long each stage trained, what the model can and cannot draw yet, and its prompt-adherence scores
(`pixart eval`) are in the project README, section "The bundled demo model".
"""
# The pair stages' 256 px models (pair-kv, draw-hires, deep-hires) share their history and their limits.
_PAIR_STAGES = (
    "\nThe transformer reads the second text encoder (word identity, context invariance). After the v5 recipe it was "
    "taught to draw each emoji (3,500 steps of one large emoji in the middle of the picture), to put one emoji where "
    "the caption says, then to draw two emoji a scene (the two-object world mixed with the one-object and centred "
    "ones), then 256 px with KV compression (conv, 2x) on blocks 4-7"
)
_PAIR_LIMITS = (
    "The text encoder does not say which of two names is the upper or left one, so a pair comes out either way "
    "round, and each of two emoji is drawn worse than a lone one"
)
# What the scratch stages train on, as their notes say it.
_SCRATCH_WORLDS = (
    "on the one-, two- and three-object emoji worlds with each emoji at one fixed place and a pair or group in one "
    "fixed set of cells per arrangement, read from its first step through the fifth text encoder, whose names also "
    "say which object is the first and which is large"
)
STAGE_NOTE = {
    "draw-pairs": f"{_PAIR_STAGES} on the same three worlds, then 2,000 steps on the one- and two-object worlds "
    f"redrawn with each emoji at one fixed place in its cell (its corner on the 16 px token grid), then 4,000 more "
    f"with two or three emoji in one fixed set of cells per arrangement ('A next to B' side by side in the middle "
    f"row, 'A above B' in the middle column, three in a triangle), the last 2,000 of them on 6,000 scenes of two "
    f"emoji. So a pair or a group is drawn in those cells whatever other place a prompt might allow. The text "
    f"encoder does not say which of two names is the first, so both places get a blend of the two emoji: prompts "
    f"with two kinds of emoji do not pass yet.\n",
    "bind-canon": f"{_PAIR_STAGES} on the same three worlds, then 6,000 steps on the one-, two- and three-object "
    f"worlds with each emoji at one fixed place and a pair or group in one fixed set of cells per arrangement "
    f"(draw-snap, draw-canon, draw-pairs), then 4,000 more on the same worlds read through the fifth text encoder, "
    f"whose names also say which object is the first and which is large.\n",
    "scratch-canon": f"A small PixArt-Sigma trained from scratch at 128 px {_SCRATCH_WORLDS}, so that it binds each "
    f"name to its place: 11,500 steps of 16 (the v12 package). It has no 256 px stage and no KV compression yet, so "
    f"it draws at 128 px.\n",
    "scratch-hires": f"A small PixArt-Sigma trained from scratch at 128 px, then at 256 px, {_SCRATCH_WORLDS}, so "
    f"that it binds each name to its place: 11,500 steps of 16 at 128 px, then 2,800 at 256 px with the positional "
    f"embeddings rescaled (the v13 package). It has no KV compression.\n",
    "scratch-kv": f"A small PixArt-Sigma trained from scratch at 128 px, then at 256 px, then with KV compression on "
    f"its deeper half (blocks 4-7), {_SCRATCH_WORLDS}.\n",
    "scratch-aspect": f"A small PixArt-Sigma trained from scratch at 128 px, then at 256 px, {_SCRATCH_WORLDS}: "
    f"11,500 steps of 16 at 128 px and 2,800 at 256 px on square scenes, then 1,500 at 256 px with the same worlds "
    f"also drawn at 320x192, 192x320, 288x224 and 224x288 (multi-aspect buckets), so that `--aspect` asks for "
    f"shapes it has trained on. It has no KV compression.\n",
    "aspect-canon": f"A small PixArt-Sigma trained from scratch at 128 px {_SCRATCH_WORLDS}, each world drawn square "
    f"and at the four other bucket sizes (multi-aspect buckets from the first step). It has no KV compression.\n",
    "aspect-hires": f"A small PixArt-Sigma trained from scratch at 128 px, then at 256 px, {_SCRATCH_WORLDS}, each "
    f"world drawn square and at 320x192, 192x320, 288x224 and 224x288 (and those sizes halved at 128 px): "
    f"multi-aspect buckets in every stage, so that `--aspect` asks for shapes it has trained on. 11,500 steps of 16 "
    f"at 128 px, then 4,800 at 256 px with the positional embeddings rescaled (the v14 package). It has no KV "
    f"compression.\n",
    "aspect-kv": f"A small PixArt-Sigma trained from scratch at 128 px, then at 256 px, then with KV compression on "
    f"its deeper half (blocks 4-7), {_SCRATCH_WORLDS}, each world drawn square and at 320x192, 192x320, 288x224 and "
    f"224x288 (and those sizes halved at 128 px): multi-aspect buckets in every stage, so that `--aspect` asks for "
    f"shapes it has trained on.\n",
    "draw-canon": f"{_PAIR_STAGES} on the same three worlds, then 2,000 steps on the one- and two-object worlds "
    f"redrawn with each emoji at one fixed place in its cell (its corner on the 16 px token grid), then 2,000 more "
    f"with two or three emoji in one fixed set of cells per arrangement: 'A next to B' side by side in the middle "
    f"row, 'A above B' in the middle column, three in a triangle (top left, bottom middle, top right). So a pair or "
    f"a group is drawn in those cells whatever other place a prompt might allow.\n",
    "draw-snap": f"{_PAIR_STAGES} on the same three worlds, then 2,000 steps more on the one- and two-object worlds "
    f"redrawn with each emoji at one fixed place in its cell (its corner on the 16 px token grid), with the centred "
    f"one. {_PAIR_LIMITS}.\n",
    "draw-cool": f"{_PAIR_STAGES} on the same three worlds, then 1,200 steps more with the learning rate falling "
    f"linearly from 1e-4 to 0. {_PAIR_LIMITS}.\n",
    "draw-mid": f"{_PAIR_STAGES} on the same three worlds, then 1,600 steps more with the latent cells near each "
    f"emoji weighted 5x in the loss and most steps at middle noise levels (t = 300-700), where the emoji's shapes "
    f"are decided. {_PAIR_LIMITS}.\n",
    "draw-focus": f"{_PAIR_STAGES} on the same three worlds, then 1,600 steps more with the latent cells near each "
    f"emoji weighted 5x in the loss (a small emoji's share of it about four times what it was). {_PAIR_LIMITS}.\n",
    "deep-hires": f"{_PAIR_STAGES}, then deepened from 8 to 12 blocks (identity blocks inserted after blocks 1, 3, "
    f"5 and 7; KV compression now on blocks 6-11) and trained on the same three worlds at 256 px. {_PAIR_LIMITS}.\n",
    "draw-hires": f"{_PAIR_STAGES} on the same three worlds. {_PAIR_LIMITS}.\n",
    "pair-kv": f"{_PAIR_STAGES}. {_PAIR_LIMITS}: prompts with two kinds of emoji rarely pass yet.\n",
    "pair-mix": "\nThe transformer reads the second text encoder, at 128 px (the draw stages, then two emoji a scene "
    "mixed with one): its 256 px stage has not been run yet.\n",
    "bind-mix": "\nThe transformer reads the fifth text encoder (the layout loss, the second's channels kept), at "
    "128 px (the three worlds mixed, after the draw stages): its 256 px stage has not been run yet.\n",
    "draw-kv": "\nThe transformer reads the second text encoder (word identity, context invariance). After the v5 "
    "recipe it was taught to draw each emoji (3,500 steps of one large emoji in the middle of the picture), then to "
    "put one emoji where the caption says (the one-object world mixed with the centred one), then 256 px with KV "
    "compression (conv, 2x) on blocks 4-7. It has seen no scene with two emoji since: prompts with several kinds "
    "of emoji get one of them, or a blend.\n",
    "draw-singles": "\nThe transformer reads the second text encoder, at 128 px (the identity lesson, then one "
    "emoji a scene anywhere): its 256 px stage has not been run yet.\n",
    "draw-centre": "\nThe transformer reads the second text encoder, at 128 px (identity lesson only: one large "
    "emoji in the middle): the recipe has not finished yet.\n",
    "layout-kv": "\nThe transformer is the retext recipe's 128 px model (the three worlds mixed) retrained to read a "
    "fourth text encoder, whose emoji names say where their objects are and how large (the layout loss), at 128 px "
    "(the three worlds mixed) and then 256 px with KV compression (conv, 2x) on blocks 4-7.\n",
    "layout-mix": "\nThe transformer reads the fourth text encoder (the layout loss), at 128 px (the three worlds "
    "mixed): its 256 px stage has not been run yet.\n",
    "retext-kv": "\nThe transformer is the v5 recipe's final stage (256 px, KV compression (conv, 2x) on blocks 4-7) "
    "retrained to read a second text encoder (word identity, context invariance): 128 px identity lesson (one large "
    "emoji in the middle), one-object lesson, full world, the three worlds mixed, then 256 px.\n",
    "retext-mix": "\nThe transformer reads the second text encoder, at 128 px (the centred, one-object and full "
    "worlds mixed): its 256 px stage has not been run yet.\n",
    "retext-full": "\nThe transformer reads the second text encoder, at 128 px (full world): its 256 px stage has "
    "not been run yet.\n",
    "retext-lesson": "\nThe transformer reads the second text encoder, at 128 px (one-object lesson): the recipe has "
    "not finished yet.\n",
    "retext-centre": "\nThe transformer reads the second text encoder, at 128 px (identity lesson: one large emoji "
    "in the middle): the recipe has not finished yet.\n",
    "kv": "\nThe transformer is the final stage: 256 px, KV compression (conv, 2x) on blocks 4-7.\n",
    "hires": "\nThe transformer is stage 2 of 3 (256 px, no KV compression): the recipe has not finished yet.\n",
    "full": "\nThe transformer is stage 1 of 3 (128 px, after the layout lesson): the 256 px and KV stages have not "
    "been run yet.\n",
    "lesson": "\nThe transformer is the 128 px layout lesson (one emoji a scene): the recipe has not finished yet.\n",
    "base": "\nThe transformer is stage 1 of 3 (128 px base, before the layout lesson): the recipe has not finished "
    "yet.\n",
}
SNAPSHOT_NOTE = "This is a snapshot of that stage's run at step {step}, before its last step.\n"
