"""Benchmark: our text-to-image pipeline vs diffusers' PixArtSigmaPipeline, then one 3840x2560 run of ours.

Both pipelines get identical random components: a full-width (1152, 16 heads, 4096-d captions) depth-2
transformer (ours, and diffusers' PixArtTransformer2DModel holding the same weights), the full-size SDXL VAE
architecture, and a one-layer T5 with 4096-d output. Each measurement runs in its own process, so its peak
RSS (VmHWM) is its own. Times are wall-clock seconds for the whole generation (2 steps, CFG 4.5, fp32, CPU).

    python benchmarks/generate.py                       # 512, 1024, 2048 (both) + 3840x2560 (ours)
    python benchmarks/generate.py --sizes 512 --no-4k   # a quick check
    python benchmarks/generate.py --rounds 3            # least time / peak of 3 alternating runs each

Targets (issue 3): time and peak-memory ratios ours/diffusers <= 1.0; the 4K run completes in 24 GiB.
This is a script, not a test: the large sizes take many minutes on a small CPU.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SENTENCES = ["a photo of a cat on a red sofa", "a lighthouse at dawn, watercolor", "an astronaut riding a horse"]
PROMPT = "a lighthouse at dawn, watercolor"


def reset_peak_rss() -> None:
    """Start VmHWM afresh at the current RSS (Linux: writing 5 to clear_refs)."""
    import gc

    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def peak_rss() -> int:
    """Peak resident set size of this process since the last reset, bytes (Linux VmHWM)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


# ---- identical random components -------------------------------------------------------------------------------


def build_components(root: Path):
    """(our transformer, tokenizer, T5, VAE), all seeded, so every process builds the same ones."""
    import sentencepiece as spm
    import torch
    from diffusers import AutoencoderKL
    from transformers import T5Config, T5EncoderModel

    from pixart.config import ModelConfig
    from pixart.model import PixArtSigma
    from pixart.text import load_tokenizer

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(SENTENCES * 30), model_writer=buf, vocab_size=64, model_type="unigram", pad_id=0,
        eos_id=1, unk_id=2, bos_id=-1, character_coverage=1.0, hard_vocab_limit=False, minloglevel=3,
    )  # fmt: skip
    (root / "spiece.model").write_bytes(buf.getvalue())
    (root / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "T5Tokenizer", "extra_ids": 100}))
    tokenizer = load_tokenizer(root)

    torch.manual_seed(0)
    model = PixArtSigma(ModelConfig(depth=2, sample_size=128, pe_interpolation=2.0)).eval()
    with torch.no_grad():
        for p in model.parameters():  # no zero-initialised layers: every path does real work
            p.normal_(0.0, 0.02)
    t5 = T5EncoderModel(
        T5Config(vocab_size=len(tokenizer), d_model=4096, d_ff=256, d_kv=64, num_heads=2, num_layers=1)
    ).eval()
    vae = AutoencoderKL(
        down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
        block_out_channels=[128, 256, 512, 512], layers_per_block=2, latent_channels=4, sample_size=1024,
        scaling_factor=0.13025, force_upcast=True,
    ).eval()  # fmt: skip
    return model, tokenizer, t5, vae


# ---- one measurement (a child process) -------------------------------------------------------------------------


def worker(impl: str, width: int, height: int, steps: int, kv: bool, tile: str) -> dict:
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        model, tokenizer, t5, vae = build_components(Path(tmp))
    stages: dict[str, float] = {}
    if impl == "diffusers":
        from diffusers import PixArtSigmaPipeline, PixArtTransformer2DModel

        from pixart.convert import config_to_diffusers, ours_to_diffusers
        from pixart.diffusion import make_scheduler

        dcfg = {k: v for k, v in config_to_diffusers(model.cfg).items() if not k.startswith(("_", "kv_"))}
        ref = PixArtTransformer2DModel(**dcfg).eval()
        sd = ours_to_diffusers(model.state_dict(), model.cfg)
        sd.pop("caption_projection.y_embedding", None)
        ref.load_state_dict(sd)
        del model, sd  # only diffusers' copy of the weights stays
        pipe = PixArtSigmaPipeline(tokenizer=tokenizer, text_encoder=t5, vae=vae, transformer=ref,
                                   scheduler=make_scheduler("dpm-solver++"))  # fmt: skip
        pipe.set_progress_bar_config(disable=True)
        reset_peak_rss()
        start = time.perf_counter()
        pipe(PROMPT, num_inference_steps=steps, height=height, width=width, generator=torch.Generator().manual_seed(0),
             use_resolution_binning=False, clean_caption=False)  # fmt: skip
    else:
        from pixart.pipeline import Text2Image, to_pil
        from pixart.text import TextEncoder

        pipe = Text2Image(model, vae, TextEncoder(tokenizer, t5), device="cpu", dtype=torch.float32)
        if kv:
            pipe.enable_kv_compression(list(range(model.cfg.depth)), factor=2)
        tile_vae = {"auto": None, "on": True, "off": False}[tile]
        reset_peak_rss()
        start = t = time.perf_counter()
        text = pipe.encode(PROMPT)
        stages["encode"] = time.perf_counter() - t
        t = time.perf_counter()
        latents = pipe.generate(text, width=width, height=height, steps=steps, seed=0, output="latent",
                                check_memory=False)  # fmt: skip
        stages["denoise"] = time.perf_counter() - t
        t = time.perf_counter()
        to_pil(pipe.decode(latents, tile_vae=tile_vae))
        stages["decode"] = time.perf_counter() - t
        stages["tiled"] = float(pipe.vae.should_tile(height, width) if tile_vae is None else tile_vae)
    total = time.perf_counter() - start
    return {"impl": impl, "size": f"{width}x{height}", "seconds": total, "peak_rss": peak_rss(), **stages}


def measure(impl: str, width: int, height: int, steps: int, threads: int, kv: bool = False, tile: str = "auto"):
    cmd = [sys.executable, __file__, "--worker", impl, "--size", f"{width}x{height}", "--steps", str(steps),
           "--threads", str(threads), "--tile", tile] + (["--kv"] if kv else [])  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{impl} {width}x{height} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---- report --------------------------------------------------------------------------------------------------


def gib(n: float) -> str:
    return f"{n / 2**30:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="*", default=[512, 1024, 2048], help="square sides to compare")
    parser.add_argument("--steps", type=int, default=2, help="sampling steps per image")
    parser.add_argument("--threads", type=int, default=2, help="torch threads per run")
    parser.add_argument("--rounds", type=int, default=1, help="runs per pipeline and size; least time, peak kept")
    parser.add_argument("--no-4k", action="store_true", help="skip the 3840x2560 run")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--size", help=argparse.SUPPRESS)
    parser.add_argument("--kv", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--tile", default="auto", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        import torch

        torch.set_num_threads(args.threads)
        width, height = (int(v) for v in args.size.split("x"))
        print(json.dumps(worker(args.worker, width, height, args.steps, args.kv, args.tile)))
        return

    rows = ["| size | ours s | diffusers s | time ratio | ours peak RSS GiB | diffusers peak RSS GiB | memory ratio "
            "| ours tiled decode |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for side in args.sizes:
        runs = {"ours": [], "diffusers": []}
        for r in range(args.rounds):  # alternating order, so a drifting machine speed hits both alike
            for impl in ("ours", "diffusers") if r % 2 == 0 else ("diffusers", "ours"):
                runs[impl].append(measure(impl, side, side, args.steps, args.threads))
        best = {impl: {**min(r, key=lambda m: m["seconds"]), "peak_rss": min(m["peak_rss"] for m in r)}
                for impl, r in runs.items()}  # fmt: skip
        ours, theirs = best["ours"], best["diffusers"]
        rows.append(
            f"| {side}² | {ours['seconds']:.1f} | {theirs['seconds']:.1f} | {ours['seconds'] / theirs['seconds']:.2f} "
            f"| {gib(ours['peak_rss'])} | {gib(theirs['peak_rss'])} | {ours['peak_rss'] / theirs['peak_rss']:.2f} "
            f"| {'yes' if ours['tiled'] else 'no'} |"
        )
        print(rows[-1], file=sys.stderr, flush=True)
    print(f"Generation, {args.steps} steps, CFG 4.5, fp32, CPU ({args.threads} threads); depth-2 full-width "
          f"transformer, SDXL-architecture VAE, 1-layer T5; least time and peak RSS of {args.rounds} run(s) "
          "each.\n")  # fmt: skip
    print("\n".join(rows))
    if not args.no_4k:
        big = measure("ours", 3840, 2560, 1, args.threads, kv=True, tile="on")
        print("\nOurs at 3840x2560 (38,400 tokens), 1 step, KV compression x2 in every block, tiled VAE decode:\n")
        print("| peak RSS GiB | encode s | denoise s | decode s | total s |\n|---|---|---|---|---|")
        print(f"| {gib(big['peak_rss'])} | {big['encode']:.1f} | {big['denoise']:.1f} | {big['decode']:.1f} "
              f"| {big['seconds']:.1f} |")  # fmt: skip


if __name__ == "__main__":
    main()
