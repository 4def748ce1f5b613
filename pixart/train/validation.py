"""Validation images during training: fixed prompts and seeds, one grid PNG per checkpointed moment.

T5 encodes the prompts once, at the start, and is then freed; the VAE stays (it is small next to the
transformer). Images come from the same `Text2Image.generate` users run, with the model being trained.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from PIL import Image

from pixart.train.config import TrainConfig

logger = logging.getLogger(__name__)


class Validator:
    """Makes `validation/step-XXXXXXXX.png` grids: one row per prompt, one column per seed."""

    def __init__(self, cfg: TrainConfig, device: torch.device):
        from pixart.text import PromptEmbeddings, TextEncoder
        from pixart.vae import VAE

        v = cfg.validation
        self.cfg, self.device = cfg, device
        self.out = Path(cfg.output_dir) / "validation"
        text = TextEncoder.from_folder(cfg.data.text_encoder, max_length=cfg.data.max_tokens, device=device)
        embeds, mask = text.encode(list(v.prompts))
        null, null_mask = text.encode([""])  # the CFG null branch: the empty prompt
        self.embeddings = PromptEmbeddings(list(v.prompts), embeds.cpu(), mask.cpu(), "", null.cpu(), null_mask.cpu())
        del text  # T5 is not needed again
        self.vae = VAE.from_folder(cfg.data.vae, device=device)

    @classmethod
    def maybe(cls, cfg: TrainConfig, device: torch.device) -> Validator | None:
        """A validator when the config asks for images and names the encoders; else None (with a warning)."""
        if not cfg.validation.prompts:
            return None
        if not (cfg.data.text_encoder and cfg.data.vae):
            logger.warning("validation.prompts is set but data.text_encoder / data.vae are not: no validation images")
            return None
        return cls(cfg, device)

    @torch.no_grad()
    def __call__(self, model: torch.nn.Module, step: int) -> Path:
        from pixart.pipeline import Text2Image

        v = self.cfg.validation
        was_training = model.training
        model.eval()
        pipe = Text2Image(transformer=model, vae=self.vae, device=self.device, dtype=torch.float32)
        width, height = (v.size + [None, None])[:2] if v.size else (None, None)
        rows = []
        for p in range(len(v.prompts)):
            prompt = self.embeddings.select([p])
            rows.append(
                [
                    pipe.generate(
                        prompt,
                        width=width,
                        height=height,
                        steps=v.steps,
                        cfg=v.cfg,
                        sampler=v.sampler,
                        seed=seed,
                        check_memory=False,
                    )[0]
                    for seed in v.seeds
                ]
            )
        model.train(was_training)
        w, h = rows[0][0].size
        grid = Image.new("RGB", (w * len(v.seeds), h * len(rows)))
        for r, row in enumerate(rows):
            for c, image in enumerate(row):
                grid.paste(image, (c * w, r * h))
        self.out.mkdir(parents=True, exist_ok=True)
        path = self.out / f"step-{step:08d}.png"
        tmp = path.with_name(path.name + ".tmp.png")
        grid.save(tmp)
        tmp.replace(path)
        logger.info("validation images: %s", path)
        return path
