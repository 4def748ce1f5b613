"""Soften a DiT's cross-attention: scale each head's queries so that its logits over the caption spread by ~TARGET.

    python scripts/temper_cross_attention.py runs/demo/dit-bind-canon/final.safetensors \
        runs/demo/dit-bind-temper-init/init.safetensors 2.0

An experiment, not part of the build. The demo DiTs' cross-attention logits (q·k / sqrt(d)) spread over hundreds
across a caption's tokens (`python -m pixart.demo.attention_probe`, the name logit gap), so each head puts all its
weight on one token and the softmax passes almost no gradient: the attention could not learn to bind if it had to.
This measures, on 32 canonical two-emoji scenes of world 1001 (not the probes' 1000) at t = 500 and 900, each head's
mean |logit - its row's mean| over the real caption tokens, and divides that head's rows of `q_linear` (weight and
bias) by spread / TARGET (never by less than 1): the logits shrink by exactly that factor and nothing else changes.
The output is a weights file with the config; put the input run's config.json beside it for the probes.
"""

from __future__ import annotations

import argparse

import torch

TIMESTEPS = (500, 900)


def main() -> None:
    from pixart.checkpoint import load_transformer, save_transformer
    from pixart.demo.attention_probe import cross_attention_recorder
    from pixart.demo.role_probe import encode_probe_set, role_scenes, run_encoders, weights_of
    from pixart.diffusion.losses import GaussianDiffusion

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("weights")
    p.add_argument("out")
    p.add_argument("target", type=float, help="the mean |logit - row mean| each head is brought down to")
    a = p.parse_args()
    ((_, path, run),) = weights_of(a.weights)
    model = load_transformer(path, dtype=torch.float32).eval()
    probe = encode_probe_set(role_scenes(32, seed=1001), *run_encoders(run), model.cfg.max_tokens)
    x0, diffusion = probe["latent"], GaussianDiffusion.linear(1000)
    spread = torch.zeros(len(model.blocks), model.cfg.num_heads)
    with torch.no_grad():
        for tv in TIMESTEPS:
            t = torch.full((len(x0),), tv)
            noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(tv))
            with cross_attention_recorder(model) as logits:
                model(diffusion.q_sample(x0, t, noise), t, *probe["true"])
            for li, lg in enumerate(logits):  # (B, H, N, L), -inf on padding
                real = torch.isfinite(lg)
                mean = torch.where(real, lg, 0).sum(-1, keepdim=True) / real.sum(-1, keepdim=True)
                dev = torch.where(real, (lg - mean).abs(), 0).sum(-1) / real.sum(-1)  # (B, H, N)
                spread[li] += dev.mean(dim=(0, 2)) / len(TIMESTEPS)
        for li, block in enumerate(model.blocks):
            q, heads = block.cross_attn.q_linear, model.cfg.num_heads
            width = q.weight.shape[0] // heads
            for h in range(heads):
                alpha = max(1.0, float(spread[li, h]) / a.target)
                q.weight[h * width : (h + 1) * width] /= alpha
                q.bias[h * width : (h + 1) * width] /= alpha
                print(f"block {li} head {h}: mean |logit - mean| {float(spread[li, h]):.1f}, queries / {alpha:.1f}")
    save_transformer(model, a.out)


if __name__ == "__main__":
    main()
