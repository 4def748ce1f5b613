"""Can a loss on the cross-attention make the demo DiT bind names to places? A short fine-tuning experiment.

    python scripts/attention_loss_probe.py --mode own --lam 0.1 --steps 400 --out runs/demo/dit-bind-own-probe

Not part of the build, and not a training option of `pixart train`: it asks whether attention supervision (as in
TokenCompose, Wang et al. 2024, which trains each noun's cross-attention map towards its segment) would be worth
building in. It fine-tunes bind-canon's EMA (`--init`) on bind-canon's five caches (through the fifth T5, at
bind-canon's shares: the pair world, the snapped one-emoji world twice, the centred, first pair and three-emoji
worlds) with the diffusion loss plus `lam` times an attention loss. Grounding comes from each cache's dataset
(`metadata.jsonl`: every object's name and box); the caption tokens of each name that occurs once are found with
the fifth T5's tokenizer, and its box is mapped to the DiT's 16 x 16 token cells. Every block's cross-attention is
read by forward hooks (`pixart.demo.attention_probe.cross_attention_recorder`). Modes, per grounded name:

- concentrate: (1 - share of the name's head-averaged attention mass that falls inside its box)^2;
- contrast (two or three names): -log(own / (own + others)) of the head-averaged mass inside each box;
- own (two or three names): -log(head-averaged mass on the own name inside its box);
- logit (two names): per head, softplus(logsumexp(other name's logits) - logsumexp(own's)) inside each box,
  the gap clipped to [-5, 5] (heads far from both names pass no gradient).

Batches of 16 drawn at random (seeded), uniform t with a tenth redrawn at t >= 900, captions dropped 10% of the
time (those get no attention loss), AdamW at `--lr` with 50 warm-up steps, gradients clipped at 1. `--twins N`:
half of each batch is instead four scenes of the pair world, each followed by its twin (the same picture with the
two emoji exchanged), drawn from N such scenes encoded at the start; with `--lam 0` that is a plain fine-tune on
twin batches. The raw weights are saved every 200 steps as `OUT/step-N.safetensors` with the run's config.json
beside them, so that `python -m pixart.demo.role_probe` and `python -m pixart.demo.attention_probe` read them.
docs/demo-model.md, "Does the attention bind?", has what each mode did.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import torch

ROOT = Path("runs/demo")
PARTS = (  # (cache, its dataset, repeats): bind-canon's mix
    ("cache-pair2-256-canon-v5", "data-pair2-256-canon", 1),
    ("cache-lesson-256-snap-v5", "data-lesson-256-snap", 2),
    ("cache-centre-256-v5", "data-centre-256", 1),
    ("cache-pair-256-canon-v5", "data-pair-256-canon", 1),
    ("cache-multi-256-canon-v5", "data-multi-256-canon", 1),
)
GRID, CELL = (16, 16), 16  # the DiT's token grid at 256 px, and the pixels of one token


def grounded_samples(tokenizer) -> list[tuple]:
    """(dataset, index, [(name token indices, (N,) bool box cells)]) for every sample of the mix, repeats included."""
    from pixart.data.cache_read import CachedDataset
    from pixart.demo.attention_probe import box_cells, name_span

    items = []
    for cache, data, repeats in PARTS:
        ds = CachedDataset(ROOT / cache, long_caption_ratio=0.0, seed=0)
        records = {}
        for line in (ROOT / data / "metadata.jsonl").read_text().splitlines():
            r = json.loads(line)
            records[r["path"]] = r
        for i, entry in enumerate(ds.entries):
            r = records[entry[6]]
            tokens = tokenizer.tokenize(r["caption"])
            names = [o["name"] for o in r["scene"]["objects"]]
            grounding = []
            for o in r["scene"]["objects"]:
                if names.count(o["name"]) == 1:
                    grounding.append(
                        (name_span(tokens, tokenizer.tokenize(o["name"])), box_cells(o["box"], GRID, CELL))
                    )
            items += [(ds, i, grounding)] * repeats
    return items


def twin_set(n: int) -> dict:
    """n pair scenes of the pair world (two different emoji), each followed by its twin: the same picture with the
    two emoji exchanged, each keeping the other's place and size, and the caption that says so. Latents (the VAE's
    mean) and T5 features as the role probe encodes them."""
    from pixart.data.emoji_layout import Scene
    from pixart.demo.role_probe import encode_probe_set, swapped_names

    scenes = []
    for line in (ROOT / "data-pair2-256-canon" / "metadata.jsonl").read_text().splitlines():
        scene = Scene.from_dict(json.loads(line)["scene"])
        if len(scene.objects) == 2 and scene.objects[0].name != scene.objects[1].name:
            scenes += [scene, swapped_names(scene)]
        if len(scenes) == 2 * n:
            break
    enc = encode_probe_set(scenes, ROOT / "export-v5", ROOT / "export-v5" / "vae", 120)
    return {"latent": enc["latent"], "caption": enc["true"][0], "mask": enc["true"][1].bool()}


def attention_loss(mode: str, logits: torch.Tensor, grounding: list) -> list[torch.Tensor]:
    """The loss terms of one sample's grounded names in one block; logits (H, N, L) with -inf on padding."""
    terms = []
    probs = logits.softmax(-1).mean(0)  # (N, L): head-averaged attention
    if mode == "concentrate":
        for span, cells in grounding:
            mass = probs[:, span].sum(-1)  # (N,)
            terms.append((1 - mass[cells].sum() / mass.sum().clamp_min(1e-8)) ** 2)
    elif mode == "contrast" and len(grounding) >= 2:
        for j, (span, cells) in enumerate(grounding):
            own = probs[cells][:, span].sum(-1)  # (Nbox,)
            other = sum(probs[cells][:, s].sum(-1) for k, (s, _) in enumerate(grounding) if k != j)
            terms.append(-torch.log((own + 1e-4) / (own + other + 2e-4)).mean())
    elif mode == "own" and len(grounding) >= 2:
        for span, cells in grounding:
            terms.append(-torch.log(probs[cells][:, span].sum(-1) + 1e-4).mean())
    elif mode == "logit" and len(grounding) == 2:
        for j, (span, cells) in enumerate(grounding):
            own = logits[:, cells][..., span].logsumexp(-1)  # (H, Nbox)
            other = logits[:, cells][..., grounding[1 - j][0]].logsumexp(-1)
            terms.append(torch.nn.functional.softplus((other - own).clamp(-5, 5)).mean())
    return terms


def main() -> None:
    from pixart.checkpoint import load_transformer, save_transformer
    from pixart.data.cache_read import collate_cached
    from pixart.demo.attention_probe import cross_attention_recorder
    from pixart.diffusion.losses import GaussianDiffusion
    from pixart.text import load_tokenizer

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--init", default=str(ROOT / "dit-bind-canon/final.safetensors"))
    p.add_argument("--out", required=True, help="a new folder for the weights and log.csv")
    p.add_argument("--mode", choices=("concentrate", "contrast", "own", "logit"), default="concentrate")
    p.add_argument("--lam", type=float, default=0.1, help="weight of the attention loss")
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument(
        "--twins", type=int, default=0, help="N > 0: half of each batch is 4 pair scenes and their 4 swapped twins"
    )
    a = p.parse_args()
    items = grounded_samples(load_tokenizer(ROOT / "export-v5/tokenizer"))
    print(f"{len(items)} samples; {sum(len(g) >= 2 for *_, g in items)} with two or more grounded names", flush=True)
    twins = twin_set(a.twins) if a.twins else None
    model = load_transformer(a.init, dtype=torch.float32).train()
    diffusion = GaussianDiffusion.linear(1000)
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(1)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=False)
    shutil.copy(Path(a.init).parent / "config.json", out / "config.json")  # the encoders the probes read
    log = (out / "log.csv").open("w")
    log.write("step,mse,attention_loss,seconds\n")
    start = time.time()
    for step in range(1, a.steps + 1):
        for group in opt.param_groups:
            group["lr"] = a.lr * min(1.0, step / 50)
        idx = torch.randint(len(items), (16,), generator=gen).tolist()
        batch = collate_cached([items[i][0].sample(items[i][1], step * 16 + j) for j, i in enumerate(idx)])
        x0, caption, mask = batch["latent"], batch["caption"], batch["caption_mask"]
        if twins is not None:  # samples 8-15: 4 pair scenes and, right after each, its twin (no grounding)
            pick = torch.randint(len(twins["latent"]) // 2, (4,), generator=gen) * 2
            pick = torch.stack([pick, pick + 1], 1).flatten()  # (8,)
            x0, caption, mask = x0.clone(), caption.clone(), mask.clone()
            x0[8:], caption[8:], mask[8:] = twins["latent"][pick], twins["caption"][pick], twins["mask"][pick]
            idx = idx[:8] + [None] * 8
        t = torch.randint(1000, (16,), generator=gen)
        t = torch.where(torch.rand(16, generator=gen) < 0.1, torch.randint(900, 1000, (16,), generator=gen), t)
        drop = torch.rand(16, generator=gen) < 0.1
        noise = torch.randn(x0.shape, generator=gen)
        xt = diffusion.q_sample(x0, t, noise)
        with cross_attention_recorder(model) as logits:
            output = model(xt, t, caption, mask, drop_caption=drop)
        mse = diffusion.training_losses(output, x0, xt, noise, t, prediction=model.cfg.prediction)["loss"].mean()
        terms = [
            term
            for lg in logits
            for b in range(16)
            if not drop[b] and idx[b] is not None
            for term in attention_loss(a.mode, lg[b], items[idx[b]][2])
        ]
        att = torch.stack(terms).mean() if terms else torch.zeros(())
        opt.zero_grad(set_to_none=True)
        (mse + a.lam * att).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 25 == 0:
            log.write(f"{step},{mse.item():.4f},{att.item():.4f},{time.time() - start:.0f}\n")
            log.flush()
            print(
                f"step {step} loss {mse.item():.4f} attention {att.item():.4f} {time.time() - start:.0f}s", flush=True
            )
        if step % 200 == 0 or step == a.steps:
            save_transformer(model, out / f"step-{step}.safetensors")


if __name__ == "__main__":
    main()
