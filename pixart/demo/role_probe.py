"""Role reliance of a DiT: how much its prediction gains from knowing which named object is where.

The pair prompts of `pixart eval` ("a heart next to a key") fail when a model reads its caption as a set of names:
it then paints one blend of the two emoji in both places (`scripts/pair_blend.py`). This probe measures that
directly, without sampling. For n two-object scenes of the canonical layout (two different emoji side by side or
one above the other, from a world seed no training set uses), fixed noise and a few timesteps, the ε-MSE is
measured four times: with each scene's own caption; with the two names swapped ("a key next to a heart": the same
words, only their roles changed); with both names replaced by another scene's two ("a cat next to a tree": the same
layout and background, other emoji); and with the captions rolled by one scene (every image with another's caption,
as `pixart.demo.probe`). Relative to the true caption's MSE,

    role gain    = (mse(swapped) - mse(true)) / mse(true)
    names gain   = (mse(renamed) - mse(true)) / mse(true)
    caption gain = (mse(rolled)  - mse(true)) / mse(true)

The MSEs are taken over the latent cells of the two objects' boxes only: outside them the captions agree (but for
the rolled one's background), and the background would otherwise drown the objects. A model that reads a bag of
names has a role gain of 0 (up to noise) however large its names gain; one that binds each name to its place has a
role gain near its names gain, since with the roles swapped each box is told to hold the wrong emoji. Their ratio,
role gain / names gain (`role_share`), is the share of what the model takes from the names that depends on their
roles. It moves with the scenes (32 of them gave one model 0.09 and 0.30 from two worlds), hence 128 by default.

    python -m pixart.demo.role_probe runs/demo/dit-bind-canon --ema          # its checkpoints' EMA weights
    python -m pixart.demo.role_probe runs/demo/dit-draw-pairs/final.safetensors --csv /tmp/roles.csv

A weights file's text encoder and VAE are those of its run (the nearest `config.json` above it, so a checkpoint's
`ema.safetensors` works too).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
from dataclasses import replace
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

TIMESTEPS = (500, 700, 900)
IMAGE_CHUNK = 128  # scenes through the VAE at a time
WORLD_SEED = 1000  # the demo's datasets use seeds 0-14, the eval its own prompt seed


def box_cells(box: tuple[int, int, int, int], grid: tuple[int, int], cell_px: int) -> torch.Tensor:
    """(h*w,) bool: the cells of an (h, w) grid of `cell_px`-pixel cells that a (x0, y0, x1, y1) pixel box touches
    (x1, y1 exclusive), row by row."""
    h, w = grid
    x0, y0, x1, y1 = box
    cells = torch.zeros(h, w, dtype=torch.bool)
    cells[max(y0, 0) // cell_px : -(-y1 // cell_px), max(x0, 0) // cell_px : -(-x1 // cell_px)] = True
    return cells.flatten()


def renamed(scene, other):
    """The scene with its two objects' emoji replaced by `other`'s two, in order, each keeping its place and size."""
    swap = ("name", "hexcode", "category")
    pairs = zip(scene.objects, other.objects, strict=True)
    return replace(scene, objects=tuple(replace(o, **{k: getattr(n, k) for k in swap}) for o, n in pairs))


def swapped_names(scene):
    """The scene with its two objects' emoji exchanged, each keeping the other's place and size."""
    return renamed(scene, replace(scene, objects=scene.objects[::-1]))


def other_pair(scenes: list, i: int):
    """The next scene after i (cyclically) whose two emoji are both unlike scene i's."""
    names = {o.name for o in scenes[i].objects}
    for k in range(1, len(scenes)):
        other = scenes[(i + k) % len(scenes)]
        if not names & {o.name for o in other.objects}:
            return other
    raise ValueError(f"no scene shares no emoji with scene {i}: use more scenes")


def role_scenes(n: int, seed: int = WORLD_SEED, side: int = 256) -> list:
    """The first n scenes of the canonical two-object world `seed` whose two emoji differ (a pair of one kind has
    no roles to swap)."""
    from pixart.data.emoji_layout import sample_scene, scene_seed

    out, i = [], 0
    while len(out) < n:
        scene = sample_scene(
            scene_seed(seed, i), side, side, min_objects=2, max_objects=2, snap=16, layout="canonical"
        )
        i += 1
        if scene.objects[0].name != scene.objects[1].name:
            out.append(scene)
        if i > 50 * n:
            raise RuntimeError(f"world {seed}: fewer than {n} two-emoji scenes in its first {i}")
    return out


@torch.no_grad()
def encode_probe_set(
    scenes: list, text_encoder: str | Path, vae: str | Path, max_tokens: int, side: int | None = None
) -> dict:
    """Latents (the VAE's mean, scaled as in a cache) and the four caption sets' T5 features of `scenes`.

    side: resize the renders to side x side first, as `pixart prepare` resizes them for a smaller bucket (the 128 px
    stages train on the 256 px canonical worlds resized); the boxes stay in the scenes' own pixels, and the latent
    cells they cover follow from the ratio of the scene's size to the latent grid."""
    from pixart.data.cache import T5AndVAE
    from pixart.data.emoji import render_scene
    from pixart.data.emoji_captions import short_caption
    from pixart.data.transforms import resize_cover_crop, to_tensor

    encoders = T5AndVAE(text_encoder, vae, max_tokens=max_tokens)
    means = []
    for start in range(0, len(scenes), IMAGE_CHUNK):  # in chunks: the VAE's activations for thousands do not fit
        images = [render_scene(s) for s in scenes[start : start + IMAGE_CHUNK]]
        if side is not None:
            images = [resize_cover_crop(im, (side, side)) for im in images]
        pixels = torch.stack([to_tensor(im) for im in images])  # (b, 3, H, W)
        means.append(encoders.encode_images(pixels)[0])  # (b, C, h, w)
    mean = torch.cat(means)  # (B, C, h, w)
    v = encoders.identity["vae"]
    latent = (mean.float() - v["shift_factor"]) * v["scaling_factor"]
    true = [short_caption(s) for s in scenes]
    swapped = [short_caption(swapped_names(s)) for s in scenes]
    renames = [short_caption(renamed(s, other_pair(scenes, i))) for i, s in enumerate(scenes)]
    grid = tuple(latent.shape[-2:])
    f = scenes[0].height // grid[0]  # the VAE's downsampling
    region = torch.zeros(len(scenes), 1, *grid)  # (B, 1, h, w): 1 on the objects' boxes
    for i, s in enumerate(scenes):
        for o in s.objects:
            region[i, 0] += box_cells(o.box, grid, f).reshape(grid).float()
    region = region.clamp(max=1)
    out = {"latent": latent, "region": region}
    for key, texts in (("true", true), ("swapped", swapped), ("renamed", renames)):
        features, mask = encoders.encode_text(texts)  # (B, L, D), (B, L)
        out[key] = (features.float(), mask)
    rolled = torch.roll(torch.arange(len(scenes)), 1)
    out["rolled"] = (out["true"][0][rolled], out["true"][1][rolled])
    return out


def side_error(side: int | None) -> str | None:
    """The CLIs' message for a --side no probe can use (None when it is fine)."""
    if side is None or (32 <= side <= 1024 and side % 32 == 0):
        return None
    return f"--side {side}: give a multiple of 32 from 32 to 1024"


def _gain(other: float, true: float) -> float:
    """(other - true) / true in %; NaN for a model exact on the true caption (no gain to measure)."""
    return 100 * (other - true) / true if true > 0 else float("nan")


@torch.no_grad()
def role_gain(model: torch.nn.Module, probe: dict, timesteps=TIMESTEPS, prediction: str = "epsilon") -> list[dict]:
    """One row per timestep: the ε-MSE with the true, swapped, renamed and rolled captions, and the gains in %."""
    from pixart.diffusion.losses import GaussianDiffusion

    diffusion = GaussianDiffusion.linear(1000)
    x0, region = probe["latent"], probe["region"]  # (B, C, h, w), (B, 1, h, w)
    c = x0.shape[1]
    cells = region.sum() * c
    rows = []
    for tv in timesteps:
        noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(int(tv)))
        t = torch.full((len(x0),), int(tv))
        xt = diffusion.q_sample(x0, t, noise)
        mse = {}
        for key in ("true", "swapped", "renamed", "rolled"):
            caption, mask = probe[key]
            out = model(xt, t, caption, mask)[:, :c]  # (B, C, h, w): ε or v
            eps = diffusion.eps_from_output(out, xt, t, prediction)
            mse[key] = (((eps - noise) ** 2) * region).sum().item() / cells.item()
        role, names = _gain(mse["swapped"], mse["true"]), _gain(mse["renamed"], mse["true"])
        rows.append(
            {
                "t": int(tv),
                **{f"mse_{k}": v for k, v in mse.items()},
                "role_gain_pct": role,
                "names_gain_pct": names,
                "caption_gain_pct": _gain(mse["rolled"], mse["true"]),
                "role_share": role / names if names > 0 else float("nan"),
            }
        )
    return rows


def weights_of(path: str | Path, ema: bool = False) -> list[tuple[str, Path, Path]]:
    """(label, weights file, run folder) for a run folder (each checkpoint's raw weights, or its EMA with `ema`;
    label "step-N") or one weights file (label: its path)."""
    from pixart.train.state import list_checkpoints

    path = Path(path)
    if path.is_dir():
        ckpts = list_checkpoints(path / "checkpoints")
        if not ckpts:
            raise FileNotFoundError(f"{path}: no checkpoints/step-* folders")
        name = "ema.safetensors" if ema else "transformer.safetensors"
        return [(c.name, c / name, path) for c in ckpts]
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such weights file or run folder")
    run = next((d for d in path.parents if (d / "config.json").is_file()), path.parent)
    return [(str(path), path, run)]


def run_encoders(run: Path) -> tuple[str, str]:
    """The text encoder and VAE folders a `pixart train` run read (its config.json)."""
    config_file = run / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{run}: no config.json to read the text encoder and VAE from")
    data = json.loads(config_file.read_text())["data"]
    return data["text_encoder"], data["vae"]


def probe_paths(
    paths: list[str],
    n: int = 128,
    timesteps=TIMESTEPS,
    seed: int = WORLD_SEED,
    ema: bool = False,
    side: int | None = None,
) -> list[dict]:
    """Rows {"weights", "t", mse_true/swapped/rolled, role_gain_pct, caption_gain_pct} for every weights file."""
    from pixart.checkpoint import load_transformer

    scenes = role_scenes(n, seed)
    probes: dict[tuple[str, str, int], dict] = {}  # one encoding per (text encoder, VAE, caption length)
    rows = []
    for path in paths:
        for label, weights, run in weights_of(path, ema):
            model = load_transformer(weights, dtype=torch.float32).eval()
            key = (*run_encoders(run), model.cfg.max_tokens)
            if key not in probes:
                probes[key] = encode_probe_set(scenes, *key, side=side)
            for row in role_gain(model, probes[key], timesteps, model.cfg.prediction):
                logger.info(
                    "%s t=%d: role gain %+.2f%%, names gain %+.2f%%, caption gain %+.2f%%, role share %.2f",
                    label,
                    row["t"],
                    row["role_gain_pct"],
                    row["names_gain_pct"],
                    row["caption_gain_pct"],
                    row["role_share"],
                )
                rows.append({"weights": label, **row})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pixart.demo.role_probe", description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", help="`pixart train` run folders (their checkpoints) or weights files")
    parser.add_argument("-n", type=int, default=128, help="scenes (default 128)")
    parser.add_argument(
        "--timesteps", default=",".join(map(str, TIMESTEPS)), help="comma-separated t (default %(default)s)"
    )
    parser.add_argument("--seed", type=int, default=WORLD_SEED, help="the probe world's seed (default %(default)s)")
    parser.add_argument(
        "--ema", action="store_true", help="a run folder's checkpoints: their EMA weights, not the raw"
    )
    parser.add_argument(
        "--side", type=int, help="resize the 256 px scenes to SIDE px first (128 for a 128 px stage; default: 256)"
    )
    parser.add_argument("--csv", help="append the rows to this CSV file")
    args = parser.parse_args(argv)
    from pixart.demo.probe import parse_timesteps

    try:
        timesteps = parse_timesteps(args.timesteps)
    except ValueError as e:
        parser.error(str(e))
    if args.n < 2:
        parser.error(f"-n {args.n}: the probe needs at least 2 scenes (it rolls captions between them)")
    if error := side_error(args.side):
        parser.error(error)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        rows = probe_paths(args.paths, args.n, timesteps, args.seed, args.ema, args.side)
    except (FileNotFoundError, KeyError, ValueError) as e:
        parser.exit(2, f"error: {e}\n")
    if args.csv:
        out = Path(args.csv)
        write_header = not out.is_file()
        with out.open("a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            if write_header:
                w.writeheader()
            for r in rows:
                w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
