"""PixArt-Σ: a Diffusion Transformer conditioned on T5 caption features (Chen et al. 2024, arXiv:2403.04692).

    latents (B, 4, H, W) ──patchify──► tokens (B, N, D) + 2-D sin-cos PE(h, w)
    timestep ──sinusoid+MLP──► t (B, D) ──t_block──► t0 (B, 6D)        [adaLN-single]
    caption (B, L, 4096) ──y_proj──► y (B, L, D)
    28 x PixArtBlock(tokens, t0, y, mask)   [self-attn (KV-compressed in some blocks), cross-attn, MLP]
    FinalLayer(tokens, t) ──unpatchify──► (B, 8, H, W): ε and the learned-range variance values

The positional embedding is a pure function of the token grid, so any aspect ratio and size works, and
`forward` never mutates module state.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from pixart.config import ModelConfig
from pixart.model.attention import init_kv_conv_as_average
from pixart.model.block import FinalLayer, PixArtBlock
from pixart.model.embeddings import (
    CaptionEmbedder,
    PatchEmbed,
    SizeEmbedder,
    TimestepEmbedder,
    sincos_2d_pos_embed,
)


class PixArtSigma(nn.Module):
    """The PixArt-Σ transformer. Build with `PixArtSigma(cfg)`; `cfg` is a frozen `ModelConfig`."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.micro_condition and cfg.hidden_size % 3:
            raise ValueError(f"micro_condition needs hidden_size divisible by 3, got {cfg.hidden_size}")
        self.cfg = cfg
        d = cfg.hidden_size
        self.x_embedder = PatchEmbed(cfg.patch_size, cfg.in_channels, d)
        self.t_embedder = TimestepEmbedder(d)
        self.t_block = nn.Sequential(nn.SiLU(), nn.Linear(d, 6 * d))
        self.y_embedder = CaptionEmbedder(cfg.caption_channels, d, cfg.max_tokens)
        if cfg.micro_condition:  # PixArt-α 1024-MS only: image size (h, w) and aspect ratio, D/3 each
            self.csize_embedder = SizeEmbedder(d // 3)
            self.ar_embedder = SizeEmbedder(d // 3)
        self.blocks = nn.ModuleList(
            PixArtBlock(d, cfg.num_heads, cfg.mlp_ratio, cfg.kv_factor(i), cfg.kv_compress_sampling)
            for i in range(cfg.depth)
        )
        self.final_layer = FinalLayer(d, cfg.patch_size, cfg.out_channels)
        self.gradient_checkpointing = False
        self.initialize_weights()

    # ---- initialisation (all of it, in one place) ------------------------------------------------------------

    def initialize_weights(self) -> None:
        """The reference's init (PixArtMS.initialize_weights), so training from scratch behaves the same."""
        d = self.cfg.hidden_size
        for module in self.modules():
            if isinstance(module, nn.Linear):  # xavier everywhere, zero biases (DiT)
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        # The patch conv is a linear layer on flattened patches: initialise it like one.
        w = self.x_embedder.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.x_embedder.proj.bias)
        # Conditioning MLPs start small.
        embedders = [
            self.t_embedder.mlp[0],
            self.t_embedder.mlp[2],
            self.t_block[1],
            self.y_embedder.y_proj.fc1,
            self.y_embedder.y_proj.fc2,
        ]
        if self.cfg.micro_condition:
            embedders += [
                self.csize_embedder.mlp[0],
                self.csize_embedder.mlp[2],
                self.ar_embedder.mlp[0],
                self.ar_embedder.mlp[2],
            ]
        for linear in embedders:
            nn.init.normal_(linear.weight, std=0.02)
        for block in self.blocks:
            nn.init.normal_(block.scale_shift_table, std=d**-0.5)  # randn / sqrt(D)
            # Cross-attention starts as a no-op so the caption pathway is learned from zero.
            nn.init.zeros_(block.cross_attn.proj.weight)
            nn.init.zeros_(block.cross_attn.proj.bias)
            if hasattr(block.attn, "sr"):
                init_kv_conv_as_average(block.attn.sr)
        nn.init.normal_(self.final_layer.scale_shift_table, std=d**-0.5)
        # Zero output layer: the untrained model predicts ε = 0.
        nn.init.zeros_(self.final_layer.linear.weight)
        nn.init.zeros_(self.final_layer.linear.bias)

    # ---- forward ------------------------------------------------------------------------------------------------

    def forward(
        self,
        x: Tensor,
        timestep: Tensor,
        caption: Tensor,
        caption_mask: Tensor | None = None,
        *,
        resolution: Tensor | None = None,
        aspect_ratio: Tensor | None = None,
        drop_caption: Tensor | None = None,
    ) -> Tensor:
        """Predict noise (and variance values) for noisy latents.

        Args:
            x: noisy latents (B, C_in, H, W); H and W multiples of the patch size.
            timestep: (B,) tensor or a scalar: the diffusion step in [0, 1000), may be fractional.
            caption: T5 features (B, L, C_text).
            caption_mask: (B, L), 1/True for real tokens, 0/False for padding; None = all real.
            resolution: (B, 2) image (h, w) in pixels, micro-conditioned (α) models only.
            aspect_ratio: (B, 1) h / w, micro-conditioned models only.
            drop_caption: (B,) bool, replace these captions by the null caption (classifier-free training).
                When None and the model is in training mode, drawn with `cfg.class_dropout_prob`.

        Returns:
            (B, C_out, H, W): ε in the first C_in channels, learned-range variance values in the rest.
        """
        cfg = self.cfg
        b, _, height, width = x.shape
        p = cfg.patch_size
        if height % p or width % p:
            raise ValueError(f"latent size {height}x{width} must be a multiple of the patch size {p}")
        grid = (height // p, width // p)
        dtype = self.x_embedder.proj.weight.dtype

        pos = sincos_2d_pos_embed(cfg.hidden_size, *grid, cfg.base_size, cfg.pe_interpolation)  # (N, D)
        x = self.x_embedder(x.to(dtype)) + pos.to(x.device, dtype)[None]  # (B, N, D)

        timestep = torch.as_tensor(timestep, device=x.device)
        timestep = timestep.reshape(-1).expand(b) if timestep.numel() == 1 else timestep  # (B,)
        t = self.t_embedder(timestep)  # (B, D)
        if cfg.micro_condition:
            if resolution is None or aspect_ratio is None:
                raise ValueError("this model is micro-conditioned: pass resolution (B, 2) and aspect_ratio (B, 1)")
            size_cond = torch.cat(
                [self.csize_embedder(resolution.reshape(b, -1)), self.ar_embedder(aspect_ratio.reshape(b, -1))], dim=1
            )  # (B, D)
            t = t + size_cond.to(t.dtype)
        t0 = self.t_block(t)  # (B, 6D)

        if drop_caption is None and self.training and cfg.class_dropout_prob > 0:
            drop_caption = torch.rand(b, device=x.device) < cfg.class_dropout_prob
        y = self.y_embedder(caption.to(dtype), drop_caption)  # (B, L, D)
        mask = None if caption_mask is None else caption_mask.to(device=x.device).bool()  # (B, L)

        use_checkpointing = self.gradient_checkpointing and self.training and torch.is_grad_enabled()
        for block in self.blocks:
            if use_checkpointing:
                x = checkpoint(block, x, t0, y, mask, grid, use_reentrant=False)  # (B, N, D)
            else:
                x = block(x, t0, y, mask, grid)  # (B, N, D)

        x = self.final_layer(x, t)  # (B, N, p*p*C_out)
        return rearrange(x, "b (h w) (p q c) -> b c (h p) (w q)", h=grid[0], w=grid[1], p=p, q=p)

    # ---- utilities ----------------------------------------------------------------------------------------------

    def set_gradient_checkpointing(self, enabled: bool = True) -> None:
        """Recompute each block's activations in the backward pass (less memory, ~30% more compute)."""
        self.gradient_checkpointing = enabled

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def enable_kv_compression(
        self, layers: list[int] | tuple[int, ...], factor: int = 2, sampling: str = "conv"
    ) -> None:
        """Switch KV token compression on (weak-to-strong step 3), for a model trained with or without it.

        Sets the KV configuration to exactly (`layers`, `factor`, `sampling`). Blocks that gain a conv get one
        initialised as an average (so it starts as average pooling, the paper's "Avg Conv Init"); a block whose
        conv already has this factor keeps its trained weights; nothing else in the model changes.
        `layers=()` switches compression off.
        """
        new_cfg = self.cfg.replace(
            kv_compress_layers=tuple(layers), kv_compress_factor=int(factor), kv_compress_sampling=sampling
        )
        ref = self.blocks[0].attn.qkv.weight
        for i, block in enumerate(self.blocks):
            attn, f = block.attn, new_cfg.kv_factor(i)
            keeps_conv = hasattr(attn, "sr") and attn.kv_factor == f
            if hasattr(attn, "sr") and not (keeps_conv and sampling == "conv" and f > 1):
                del attn.sr, attn.norm
            if f > 1 and sampling == "conv" and not hasattr(attn, "sr"):
                dim = self.cfg.hidden_size
                attn.sr = nn.Conv2d(dim, dim, kernel_size=f, stride=f, groups=dim).to(ref.device, ref.dtype)
                attn.norm = nn.LayerNorm(dim).to(ref.device, ref.dtype)
                init_kv_conv_as_average(attn.sr)
            attn.kv_factor, attn.kv_sampling = f, sampling
        self.cfg = new_cfg
