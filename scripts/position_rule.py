"""Experiment: can the demo DiT learn "the position word puts the object in that cell" from the caption alone?

    python scripts/position_rule.py --tlo 900 --steps 1500              # every sample at t in [900, 1000)
    python scripts/position_rule.py --mix 0.5 --mix-from 900 --steps 1500   # half of them there, half uniform
    python scripts/position_rule.py --steps 1500                        # uniform t over [0, 1000): the recipe so far
    python scripts/position_rule.py --tlo 900 --init CKPT/transformer.safetensors   # from a trained base instead
    python scripts/position_rule.py --world all --tlo 900 --steps 3000 --ema 0.995 --init ... --save OUT.safetensors

The world is the simplest one with a layout rule: one emoji (the sun), one per scene, at 128², so only its grid
cell (9), size word (3) and background colour vary (`--world weather`: its 12 weather emoji, `--world all`: the
whole vocabulary, still one per scene). 3,000 scenes (seed 0, as `pixart.data.emoji` draws them with the vocabulary
cut down and `max_objects=1`) are encoded once with the demo VAE (posterior mean x scaling_factor) and T5 (short
captions, "a large sun at the top left of a green background"), cached in ROOT/WORLD.pt; the first 256 are held
out. The model is the demo base DiT (configs/demo/base.toml's architecture, v-prediction, learned variance, caption
dropout 0.1), trained from random weights (or `--init` ones) with AdamW at `--lr` (3e-4), 200 warm-up steps,
gradient clip 1, batch 32, bf16 autocast: the base recipe except for where the timesteps fall.

At t = 999 the noisy latent holds almost nothing of the scene, so everything the model's clean estimate x̂_0 shows
there comes from the caption. Every `--eval-every` steps, on the held-out scenes at t = 999 with one fixed noise:
- x0_rmse: RMS error of x̂_0, next to `flat`, the error of the scene's own flat background (per-channel median);
- cell_acc: how often the 3x3 cell where x̂_0 departs most from its own background is the caption's cell
  (1/9 = chance; a model that has the rule places the sun's blob there).

`--ema D` also evaluates an exponential moving average of the weights (decay D), whose estimate is steadier than the
raw weights'; `--save` writes the final raw weights for a later `--init`, or, with `--init`, in that file's format
(for a later `pixart train --set model.init_from=...`).

Not a test: it measures how many steps the rule takes and which timestep mix lets it be learnt (docs/demo-model.md).
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

HELD_OUT = 256
CAPTION_TOKENS = 24  # the longest short caption of this world is 12 tokens


def build_world(path: Path, n: int = 3000, world: str = "sun") -> dict:
    """Render, encode and save a one-object world (about 2 minutes on 2 cores): the sun, the weather emoji or all."""
    import numpy as np

    import pixart.data.emoji as emoji
    from pixart.data.cache import T5AndVAE
    from pixart.data.emoji_vocab import BY_NAME, POSITIONS

    export = REPO / "runs" / "demo" / "export"
    encoders = T5AndVAE(export, export / "vae", max_tokens=120)
    vocabulary = (BY_NAME["sun"],) if world == "sun" else emoji.entries_for(None if world == "all" else [world])
    real_entries, emoji.entries_for = emoji.entries_for, lambda categories=None: vocabulary
    try:
        latents, captions, cells = [], [], []
        for start in range(0, n, 50):
            pixels = []
            for i in range(start, min(n, start + 50)):
                image, scene = emoji.make_scene(emoji.scene_seed(0, i), 128, 128, max_objects=1)
                pixels.append(torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 127.5 - 1)  # (3, H, W)
                captions.append(emoji.short_caption(scene))
                cells.append(POSITIONS.index(scene.objects[0].position))
            mean, _ = encoders.encode_images(torch.stack(pixels))  # (b, 4, 16, 16)
            latents.append(mean * encoders.identity["vae"]["scaling_factor"])
    finally:
        emoji.entries_for = real_entries
    features, masks = [], []
    for s in range(0, n, 200):
        f, m = encoders.encode_text(captions[s : s + 200])  # (b, 120, 256), (b, 120)
        if int(m.sum(1).max()) > CAPTION_TOKENS:
            raise ValueError(f"a caption is longer than {CAPTION_TOKENS} tokens")
        features.append(f[:, :CAPTION_TOKENS].half())
        masks.append(m[:, :CAPTION_TOKENS])
    world = {
        "latent": torch.cat(latents),
        "caption": torch.cat(features),
        "mask": torch.cat(masks),
        "cell": torch.tensor(cells),
        "text": captions,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(world, path)
    return world


def build_model(caption_channels: int, init: Path | None = None) -> torch.nn.Module:
    """configs/demo/base.toml's DiT for 24-token captions from random weights, or the model `init` holds (a demo
    checkpoint's .safetensors or a package's transformer/ folder, with its own config; its null caption's first 24
    rows serve the 24-token captions)."""
    from pixart.config import get_preset
    from pixart.model.transformer import PixArtSigma

    if init is not None:
        from pixart.checkpoint import load_transformer

        return load_transformer(init, dtype=torch.float32).train()
    cfg = get_preset("PixArt-Sigma-XL-2-256x256").replace(
        depth=8,
        hidden_size=256,
        num_heads=4,
        caption_channels=caption_channels,
        max_tokens=CAPTION_TOKENS,
        sample_size=16,
        pe_interpolation=0.25,
        prediction="v",
        class_dropout_prob=0.1,
    )
    return PixArtSigma(cfg)


@torch.no_grad()
def estimate_x0(model, diffusion, x0: torch.Tensor, caption: torch.Tensor, mask: torch.Tensor, t: int) -> torch.Tensor:
    """The clean latent the model's v implies for x0 noised to t with one fixed noise (bf16 autocast)."""
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(123))
    tt = torch.full((len(x0),), t, dtype=torch.long)
    xt = diffusion.q_sample(x0, tt, noise)
    v = []
    for s in range(0, len(x0), 64):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(
                xt[s : s + 64],
                tt[s : s + 64],
                caption[s : s + 64],
                mask[s : s + 64],
                drop_caption=torch.zeros(len(xt[s : s + 64]), dtype=torch.bool),
            )
        v.append(out[:, :4].float())
    keep = diffusion.at("sqrt_acp", tt, x0) ** 2  # ᾱ_t
    return keep.sqrt() * xt - (1 - keep).sqrt() * torch.cat(v)  # (n, 4, h, w)


def train_step(model, opt, diffusion, x0, caption, mask, t, noise, gen) -> tuple[float, float]:
    """One AdamW step of the v loss (learned variance, caption dropout 0.1, gradient clip 1, bf16 autocast)."""
    xt = diffusion.q_sample(x0, t, noise)
    drop = torch.rand(len(x0), generator=gen) < 0.1
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(xt, t, caption, mask, drop_caption=drop)
    losses = diffusion.training_losses(out.float(), x0, xt, noise, t, prediction="v")
    opt.zero_grad()
    losses["loss"].mean().backward()
    grad = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return losses["mse"].mean().item(), grad.item()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", type=Path, default=Path("/tmp/position-rule"), help="where WORLD.pt is cached")
    p.add_argument("--world", choices=("sun", "weather", "all"), default="sun", help="which emoji (one per scene)")
    p.add_argument("--steps", type=int, default=1500, help="0: only evaluate the --init weights")
    p.add_argument("--tlo", type=int, default=0, help="draw t uniformly from [tlo, 1000)")
    p.add_argument("--mix", type=float, default=0.0, help="this share of each batch from [mix-from, 1000) instead")
    p.add_argument("--mix-from", type=int, default=900)
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--init", type=Path, help="start from these demo-base weights (a checkpoint's .safetensors)")
    p.add_argument("--save", type=Path, help="write the final (raw) weights here, .safetensors")
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--ema", type=float, default=0.0, help="also evaluate an EMA of the weights with this decay")
    return p


def main(argv: list[str] | None = None) -> None:
    from pixart.diffusion.losses import GaussianDiffusion
    from pixart.train.optim import ema_state_dict, init_ema, update_ema

    a = build_parser().parse_args(argv)
    torch.manual_seed(a.seed)
    path = a.root / f"{a.world}.pt"
    world = torch.load(path) if path.is_file() else build_world(path, world=a.world)
    latent, caption, mask, cell = world["latent"].float(), world["caption"].float(), world["mask"], world["cell"]
    train, held = torch.arange(HELD_OUT, len(latent)), torch.arange(HELD_OUT)
    model = build_model(caption.shape[-1], a.init)
    diffusion = GaussianDiffusion.linear(1000)
    ema = init_ema(model) if a.ema else None
    ema_model = copy.deepcopy(model).requires_grad_(False) if a.ema else None  # what the EMA is evaluated in
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=0.0)
    warmup = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 200))
    size = sum(p.numel() for p in model.parameters()) / 1e6
    print(f"{size:.2f}M parameters; {len(train)} train, {HELD_OUT} held out")

    @torch.no_grad()
    def evaluate(model: torch.nn.Module, t: int = 999) -> tuple[float, float, float]:
        was_training = model.training
        model.eval()
        x0 = latent[held]  # (n, 4, 16, 16)
        x0_hat = estimate_x0(model, diffusion, x0, caption[held], mask[held], t)  # (n, 4, 16, 16)
        background = x0.flatten(2).median(2).values[..., None, None]  # (n, 4, 1, 1)
        rmse = (x0_hat - x0).pow(2).mean().sqrt().item()
        flat = (background - x0).pow(2).mean().sqrt().item()
        departure = (x0_hat - x0_hat.flatten(2).median(2).values[..., None, None]).pow(2).sum(1)  # (n, 16, 16)
        per_cell = F.avg_pool2d(departure[:, None, :15, :15], 5)[:, 0].flatten(1)  # (n, 9): 5x5-latent cells
        accuracy = (per_cell.argmax(1) == cell[held]).float().mean().item()
        model.train(was_training)
        return rmse, flat, accuracy

    if a.steps == 0:  # only evaluate the --init weights
        rmse, flat, accuracy = evaluate(model)
        print(f"{a.init}: t=999: x0_rmse {rmse:.3f} (flat {flat:.3f}) cell_acc {accuracy:.2f}", flush=True)
    start, gen = time.time(), torch.Generator().manual_seed(a.seed)
    for step in range(1, a.steps + 1):
        idx = train[torch.randint(len(train), (32,), generator=gen)]
        x0 = latent[idx]
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(a.tlo, 1000, (32,), generator=gen)
        if a.mix > 0:
            high = torch.rand(32, generator=gen) < a.mix
            t = torch.where(
                high,
                torch.randint(a.mix_from, 1000, (32,), generator=gen),
                torch.randint(0, 1000, (32,), generator=gen),
            )
        mse, grad = train_step(model, opt, diffusion, x0, caption[idx], mask[idx], t, noise, gen)
        warmup.step()
        if ema is not None:
            update_ema(ema, model, a.ema)
        if step % a.eval_every == 0 or step == 1:
            rmse, flat, accuracy = evaluate(model)
            line = (
                f"step {step} mse {mse:.4f} grad {grad:.2f} | t=999: x0_rmse "
                f"{rmse:.3f} (flat {flat:.3f}) cell_acc {accuracy:.2f}"
            )
            if ema is not None:
                ema_model.load_state_dict(ema_state_dict(ema, model.state_dict()))
                rmse, _, accuracy = evaluate(ema_model)
                line += f" | ema x0_rmse {rmse:.3f} cell_acc {accuracy:.2f}"
            print(f"{line} | {time.time() - start:.0f}s", flush=True)
    if a.save:
        save(model, a.save, a.init)


def save(model: torch.nn.Module, path: Path, init: Path | None) -> None:
    """Write the raw weights; with an `init` file, in its format (config metadata) so that `pixart train --set
    model.init_from=PATH` can carry on from them in the full world."""
    from pixart.checkpoint_io import read_safetensors, write_safetensors

    weights = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    metadata = read_safetensors(init)[1] if init and init.is_file() else None
    path.parent.mkdir(parents=True, exist_ok=True)
    write_safetensors(weights, path, metadata)


if __name__ == "__main__":
    main()
