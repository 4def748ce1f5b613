"""Experiment: can the demo DiT learn which emoji a caption names, when nothing else about the object varies?

    python scripts/identity_rule.py --steps 0 --init runs/demo/dit-full/final-raw.safetensors    # only evaluate
    python scripts/identity_rule.py --steps 1500 --init runs/demo/dit-full/final-raw.safetensors
    python scripts/identity_rule.py --steps 1500 --text names    # the names' T5 features only, see below
    python scripts/identity_rule.py --text-report --export OTHER --root /tmp/identity-other   # another text encoder
    python scripts/identity_rule.py --steps 0 --init pixart/assets/demo/transformer   # a package's transformer
    python scripts/identity_rule.py --steps 0 --init W --export runs/demo/export-v2 --root /tmp/identity-v2  # 2nd T5

The world: each of the vocabulary's N emoji (50; 145 before the world's vocabulary was cut to 50), large (0.42 of
the side) and centred, on each of the 10 palette backgrounds, at 128², captioned as the emoji world captions it
("a large dog in the center of a red background"): 10 N scenes,
rendered and encoded once with the demo VAE and T5 into ROOT/centre.pt. For every emoji one background (seeded) is
held out, so the N held-out scenes pair an emoji with a colour it was never trained on. The caption decides the
whole scene, so at t = 999, where the noisy latent holds almost nothing of it, a model that reads the name draws
that emoji, and one that does not draws the average emoji on that background.

Every `--eval-every` steps, on the held-out scenes with one fixed noise, at t = 999, 700 and 500:
- x0_rmse: RMS error of the clean estimate x̂_0 (next to `flat`, the background alone, and `mean`, the background
  plus the mean emoji of the training scenes on that background: what a model that ignores the name can do);
- id_acc: how often the nearest (in MSE) of the N emoji rendered on that scene's background is the caption's
  emoji (chance 1/N); `train`: the same on one training scene per emoji.

Training is scripts/position_rule.py's (the base recipe's model, v loss, AdamW at `--lr`, 200 warm-up steps, batch
32, bf16 autocast), with t uniform over [`--tlo`, 1000). `--text names` keeps only the caption's T5 features at the
name's tokens (and the end token), masking the rest: the same features, without the template around them.
`--text oracle` replaces the name's features by a fixed random vector per emoji: a text encoder whose names are as
distinct as they can be, whatever the words around them; `--text alone` by T5's features of the name encoded on
its own: this T5's vectors for the names, free of their context. `--reinit-text` gives the `--init` model's
caption pathway (caption MLP, cross-attention) its initial weights again: what it has learnt to ignore is forgotten.
`--names-from ROOT2` takes the features at the names' tokens from a world encoded by another text encoder
(`--export`), the rest of each caption from this one: that encoder's names, with nothing else changed;
`--names-average` averages each emoji's swapped-in features over its scenes (held-out ones included, which only
removes the background word's trace from them).

Not a test: it measures whether, and how fast, identity can be learnt from the captions (docs/demo-model.md).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from position_rule import CAPTION_TOKENS, build_model, estimate_x0, save, train_step  # noqa: E402

SIDE = 128
EVAL_T = (999, 700, 500)


def build_world(path: Path, export: Path) -> dict:
    """Render and encode every emoji, large and centred, on every background (about a minute on 2 cores)."""
    import numpy as np
    from transformers import AutoTokenizer

    import pixart.data.emoji as emoji
    from pixart.data.cache import T5AndVAE
    from pixart.data.emoji_vocab import PALETTE, SIZE_FRACTIONS, VOCABULARY

    vae = REPO / "runs" / "demo" / "export" / "vae"
    encoders = T5AndVAE(export, vae, max_tokens=120)
    tokenizer = AutoTokenizer.from_pretrained(export / "tokenizer")
    size = round(SIZE_FRACTIONS["large"] * SIDE)
    before = len(tokenizer("a large", add_special_tokens=False).input_ids)  # where each caption's name starts
    latents, captions, name_tokens, labels = [], [], [], []
    for e, entry in enumerate(VOCABULARY):
        pixels = []
        for colour, rgb in PALETTE.items():
            thing = emoji.SceneObject(
                entry.name, entry.hexcode, entry.category, SIDE // 2, SIDE // 2, size, "large", "center"
            )
            scene = emoji.Scene(SIDE, SIDE, colour, rgb, (thing,))
            pixels.append(torch.from_numpy(np.array(emoji.render_scene(scene))).permute(2, 0, 1).float() / 127.5 - 1)
            caption = emoji.short_caption(scene)  # "a large dog in the center of a red background"
            through = len(tokenizer(f"a large {entry.name}", add_special_tokens=False).input_ids)
            captions.append(caption)
            name_tokens.append((before, through))
            labels.append((e, len(labels) % len(PALETTE)))
        mean, _ = encoders.encode_images(torch.stack(pixels))  # (10, 4, 16, 16)
        latents.append(mean * encoders.identity["vae"]["scaling_factor"])
    features, masks = [], []
    for s in range(0, len(captions), 200):
        f, m = encoders.encode_text(captions[s : s + 200])  # (b, 120, 256), (b, 120)
        features.append(f[:, :CAPTION_TOKENS].half())
        masks.append(m[:, :CAPTION_TOKENS])
    world = {
        "latent": torch.cat(latents),  # (10 N, 4, 16, 16), emoji-major
        "caption": torch.cat(features),
        "mask": torch.cat(masks),
        "names": torch.tensor(name_tokens),  # (10 N, 2): [start, end) of the name's tokens
        "label": torch.tensor(labels),  # (10 N, 2): emoji index, background index
        "text": captions,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(world, path)
    return world


def with_names_from(caption: torch.Tensor, world: dict, root: Path, average: bool) -> torch.Tensor:
    """The captions with the features at the names' tokens taken from ROOT/centre.pt, the same world encoded by
    another text encoder (same captions, same token positions); `average`: each emoji's averaged over its scenes,
    so that no trace of the background word is left in them."""
    other = torch.load(root / "centre.pt")
    if not torch.equal(other["names"], world["names"]) or other["text"] != world["text"]:
        raise ValueError(f"{root / 'centre.pt'} tokenises the names differently; cannot swap them in")
    swapped, emoji = other["caption"].float(), world["label"][:, 0]
    if average:
        for e in emoji.unique():
            swapped[emoji == e] = swapped[emoji == e].mean(0)
    out = caption.clone()
    for i, (start, end) in enumerate(world["names"].tolist()):
        out[i, start:end] = swapped[i, start:end]
    return out


def with_names_alone(caption: torch.Tensor, names: torch.Tensor, emoji: torch.Tensor, export: Path) -> torch.Tensor:
    """The captions with the name's features replaced by T5's features of the name encoded on its own: this text
    encoder's own vectors for the names, without the context that blurs them."""
    from pixart.data.cache import T5AndVAE
    from pixart.data.emoji_vocab import VOCABULARY

    vae = REPO / "runs" / "demo" / "export" / "vae"
    features, _ = T5AndVAE(export, vae, max_tokens=120).encode_text([e.name for e in VOCABULARY])
    out = caption.clone()
    for i, (start, end) in enumerate(names.tolist()):
        out[i, start:end] = features[emoji[i], : end - start].float()  # the name's tokens, before its end token
    return out


def reinit_text_pathway(model: torch.nn.Module) -> None:
    """Give the model's caption pathway its initial weights again (caption MLP as the model's init: N(0, 0.02);
    cross-attention q/kv xavier, output zero), keeping everything else it has learnt."""
    torch.manual_seed(3)
    for linear in (model.y_embedder.y_proj.fc1, model.y_embedder.y_proj.fc2):
        torch.nn.init.normal_(linear.weight, std=0.02)
        torch.nn.init.zeros_(linear.bias)
    for block in model.blocks:
        for linear in (block.cross_attn.q_linear, block.cross_attn.kv_linear):
            torch.nn.init.xavier_uniform_(linear.weight)
            torch.nn.init.zeros_(linear.bias)
        torch.nn.init.zeros_(block.cross_attn.proj.weight)
        torch.nn.init.zeros_(block.cross_attn.proj.bias)


def names_only(mask: torch.Tensor, names: torch.Tensor) -> torch.Tensor:
    """The mask that keeps a caption's name tokens and its end token (the last unmasked one)."""
    keep = torch.zeros_like(mask)
    for i, (start, end) in enumerate(names.tolist()):
        keep[i, start:end] = 1
        keep[i, int(mask[i].sum()) - 1] = 1
    return keep


def with_oracle_names(caption: torch.Tensor, names: torch.Tensor, emoji: torch.Tensor) -> torch.Tensor:
    """The captions with the name's features replaced by one fixed random vector per emoji, at the features' RMS:
    a name that no context blurs and that lies as far from every other name as chance allows."""
    rms = caption.pow(2).mean(-1).sqrt().mean()
    table = torch.randn(int(emoji.max()) + 1, caption.shape[-1], generator=torch.Generator().manual_seed(11)) * rms
    out = caption.clone()
    for i, (start, end) in enumerate(names.tolist()):
        out[i, start:end] = table[emoji[i]]
    return out


def name_feature_report(world: dict) -> str:
    """How distinct the T5 features at the names' tokens are: their spread between emoji and, for one emoji,
    between backgrounds, how often a scene's nearest other scene (cosine, centred) names the same emoji, and the
    mean cosine (uncentred) between the features of different emoji (the oracle's random vectors: about 0)."""
    caption, label = world["caption"].float(), world["label"]
    names = torch.stack([caption[i, s:e].mean(0) for i, (s, e) in enumerate(world["names"].tolist())])  # (n, C)
    n_emoji = int(label[:, 0].max()) + 1
    grouped = names.view(n_emoji, -1, names.shape[-1])  # (emoji, background, C), emoji-major
    unit = F.normalize(names - names.mean(0), dim=1)
    similarity = (unit @ unit.T).fill_diagonal_(-2)
    nearest_same = (label[similarity.argmax(1), 0] == label[:, 0]).float().mean().item()
    raw = F.normalize(names, dim=1)
    other = label[:, 0][:, None] != label[:, 0][None]  # (n, n): pairs of scenes with different emoji
    cosine = (raw @ raw.T)[other].mean().item()
    return (
        f"name-token features: RMS {names.pow(2).mean().sqrt():.3f}, std between emoji "
        f"{grouped.mean(1).std(0).mean():.3f}, between backgrounds of one emoji {grouped.std(1).mean():.3f}; "
        f"nearest other scene names the same emoji: {nearest_same:.3f}; cosine between different emoji's: {cosine:.3f}"
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", type=Path, default=Path("/tmp/identity-rule"), help="where centre.pt is cached")
    p.add_argument(
        "--export",
        type=Path,
        default=REPO / "runs" / "demo" / "export",
        help="the text encoder: a folder with text_encoder/ and tokenizer/ (the VAE is always the demo's)",
    )
    p.add_argument("--steps", type=int, default=1500, help="0: only evaluate the --init weights")
    p.add_argument("--text-report", action="store_true", help="only report how distinct the names' T5 features are")
    p.add_argument("--tlo", type=int, default=0, help="draw t uniformly from [tlo, 1000)")
    p.add_argument(
        "--text",
        choices=("caption", "names", "oracle", "alone"),
        default="caption",
        help="what of the caption the model sees",
    )
    p.add_argument("--emoji", type=int, default=0, help="only this many of the emoji (a seeded subset); 0: all")
    p.add_argument(
        "--names-from", type=Path, help="a ROOT built with another --export: take the names' features from it"
    )
    p.add_argument("--names-average", action="store_true", help="with --names-from: one name vector per emoji")
    p.add_argument("--reinit-text", action="store_true", help="start the --init model's caption pathway afresh")
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--init", type=Path, help="start from these demo-base weights (a checkpoint's .safetensors)")
    p.add_argument("--save", type=Path, help="write the final (raw) weights here, .safetensors")
    p.add_argument("--lr", type=float, default=3e-4)
    return p


def main(argv: list[str] | None = None) -> None:
    from pixart.diffusion.losses import GaussianDiffusion

    a = build_parser().parse_args(argv)
    torch.manual_seed(a.seed)
    path = a.root / "centre.pt"
    world = torch.load(path) if path.is_file() else build_world(path, a.export)
    if a.text_report:
        print(name_feature_report(world))
        return
    latent, caption, mask, label = world["latent"].float(), world["caption"].float(), world["mask"], world["label"]
    if a.names_from:
        caption = with_names_from(caption, world, a.names_from, a.names_average)
    if a.text == "oracle":
        caption = with_oracle_names(caption, world["names"], label[:, 0])
    if a.text == "alone":
        caption = with_names_alone(caption, world["names"], label[:, 0], a.export)
    if a.text == "names":
        mask = names_only(mask, world["names"])
    if a.emoji:  # a seeded subset of the vocabulary, relabelled 0..n-1
        chosen = torch.randperm(int(label[:, 0].max()) + 1, generator=torch.Generator().manual_seed(5))[: a.emoji]
        rows = torch.cat([torch.nonzero(label[:, 0] == e)[:, 0] for e in chosen.sort().values])
        latent, caption, mask, label = latent[rows], caption[rows], mask[rows], label[rows]
        label = torch.stack([torch.unique(label[:, 0], return_inverse=True)[1], label[:, 1]], 1)
    n_emoji, n_colour = int(label[:, 0].max()) + 1, int(label[:, 1].max()) + 1
    table = latent.view(n_emoji, n_colour, *latent.shape[1:])  # (N, 10, 4, 16, 16)
    held_colour = torch.randint(n_colour, (n_emoji,), generator=torch.Generator().manual_seed(7))
    held = torch.arange(n_emoji) * n_colour + held_colour  # (N,)
    train = torch.tensor(sorted(set(range(len(latent))) - set(held.tolist())))
    model = build_model(caption.shape[-1], a.init)
    if a.reinit_text:
        reinit_text_pathway(model)
    diffusion = GaussianDiffusion.linear(1000)
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=0.0)
    warmup = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 200))
    print(f"{len(train)} train, {len(held)} held out; text: {a.text}", flush=True)

    # What ignoring the name can do: the mean training emoji on each background.
    is_train = torch.ones(n_emoji, n_colour, dtype=torch.bool)
    is_train[torch.arange(n_emoji), held_colour] = False
    colour_mean = (table * is_train[..., None, None, None]).sum(0) / is_train.sum(0)[:, None, None, None]
    x0 = latent[held]  # (N, 4, 16, 16)
    flat = (x0.flatten(2).median(2).values[..., None, None] - x0).pow(2).mean().sqrt().item()
    mean = (colour_mean[held_colour] - x0).pow(2).mean().sqrt().item()
    print(f"held-out scenes: flat background RMS error {flat:.3f}, background + mean emoji {mean:.3f}", flush=True)

    @torch.no_grad()
    def evaluate() -> str:
        model.eval()
        parts = []
        seen_colour = (held_colour + 1) % n_colour  # a training background for every emoji
        for t in EVAL_T:
            accuracies = []
            for colours in (held_colour, seen_colour):
                rows = torch.arange(n_emoji) * n_colour + colours
                x0_hat = estimate_x0(model, diffusion, latent[rows], caption[rows], mask[rows], t)  # (n, 4, 16, 16)
                if colours is held_colour:
                    rmse = (x0_hat - latent[rows]).pow(2).mean().sqrt().item()
                candidates = table[:, colours].transpose(0, 1)  # (scene, emoji, 4, 16, 16)
                distance = (candidates - x0_hat[:, None]).pow(2).flatten(2).mean(2)  # (scene, emoji)
                accuracies.append((distance.argmin(1) == torch.arange(n_emoji)).float().mean().item())
            parts.append(f"t={t}: x0_rmse {rmse:.3f} id_acc {accuracies[0]:.3f} (train {accuracies[1]:.3f})")
        model.train()
        return " | ".join(parts)

    if a.steps == 0:
        print(f"{a.init}: {evaluate()}", flush=True)
    start, gen = time.time(), torch.Generator().manual_seed(a.seed)
    for step in range(1, a.steps + 1):
        idx = train[torch.randint(len(train), (32,), generator=gen)]
        noise = torch.randn(latent[idx].shape, generator=gen)
        t = torch.randint(a.tlo, 1000, (32,), generator=gen)
        mse, grad = train_step(model, opt, diffusion, latent[idx], caption[idx], mask[idx], t, noise, gen)
        warmup.step()
        if step % a.eval_every == 0:
            print(f"step {step} mse {mse:.4f} grad {grad:.2f} | {evaluate()} | {time.time() - start:.0f}s", flush=True)
    if a.save:
        save(model, a.save, a.init)


if __name__ == "__main__":
    main()
