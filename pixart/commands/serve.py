"""Serve the web UI: a page to generate images from text prompts, and the same as an HTTP API for scripts.

Examples:
  pixart serve                                            # the bundled demo model, at http://127.0.0.1:7860
  pixart serve --model PixArt-Sigma-XL-2-1024-MS --model my-finetune/ --device cuda
  pixart serve --model PixArt-Sigma-XL-2-512-MS --port 8000 --concurrency 2 --max-images 8

The server listens on 127.0.0.1 (this machine only) unless --host says otherwise: anyone who can reach it can
use the model and the machine's GPU. Requests wait in a queue and --concurrency of them run at once; each
model loads on its first request and stays loaded. Needs the `ui` extra: pip install -e .[ui]
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import socket

from pixart.commands.generate import BUNDLED_MODEL, DTYPE_NAMES, _number

logger = logging.getLogger(__name__)

MAX_CONCURRENCY = 64
MAX_IMAGES_LIMIT = 100
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", action="append", default=[], metavar="PATH",
                        help="a PixArt-Σ pipeline folder (diffusers layout) to offer in the model picker; "
                        "repeatable; the bundled demo model is offered too when installed")  # fmt: skip
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on; 0.0.0.0 opens it to the network")
    parser.add_argument("--port", default="7860", metavar="N", help="port to listen on; 0 picks a free one")
    parser.add_argument("--concurrency", default="1", metavar="N",
                        help="requests generated at once (others queue); each needs its own memory")  # fmt: skip
    parser.add_argument("--max-images", default="4", metavar="N", help="most images one request may ask for")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument("--dtype", default="auto", help="fp32, bf16, fp16 or auto (fp32 on CPU, bf16/fp16 on GPU)")


def _int(flag: str, text: str, low: int, high: int) -> int:
    value = _number(flag, text, int, minimum=low, allowed=f"an integer from {low} to {high}")
    if value > high:
        raise ValueError(f"{flag} {value}: must be an integer from {low} to {high}")
    return value


def free_port(host: str) -> int:
    """A port nobody listens on now (the OS picks it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def run(args: argparse.Namespace) -> int:
    port = _int("--port", args.port, 0, 65535)
    concurrency = _int("--concurrency", args.concurrency, 1, MAX_CONCURRENCY)
    max_images = _int("--max-images", args.max_images, 1, MAX_IMAGES_LIMIT)
    if args.dtype not in DTYPE_NAMES:
        raise ValueError(f"--dtype {args.dtype!r}: allowed are {', '.join(DTYPE_NAMES)}")
    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", args.device):
        raise ValueError(f"--device {args.device!r}: allowed are auto, cpu, cuda, cuda:N, mps")
    from pixart.webui import model_folders

    folders = model_folders(args.model, BUNDLED_MODEL)  # one clear line when there is no model
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise ValueError("pixart serve needs gradio: pip install -e .[ui]") from None
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # a local tool phones nobody

    from pixart.components import DTYPES
    from pixart.webui import Service, build_app, open_models

    pipes = open_models(folders, device=args.device, dtype=DTYPES.get(DTYPE_NAMES[args.dtype]))
    service = Service(pipes, max_images=max_images)
    app = build_app(service, concurrency=concurrency)
    if args.host not in LOOPBACK:
        logger.warning("listening on %s: anyone who can reach this address can use the UI and this machine", args.host)
    logger.info("models: %s", ", ".join(f"{key} ({path})" for key, path in folders.items()))
    logging.getLogger("httpx").setLevel(logging.WARNING)  # gradio's own requests to itself at startup
    try:
        app.launch(
            server_name=args.host, server_port=port or free_port(args.host), share=False, show_error=False,
            ssr_mode=False, mcp_server=False, pwa=False, quiet=True, prevent_thread_lock=True,
        )  # fmt: skip
        print(f"pixart serve: open {app.local_url} (Ctrl+C stops the server)", flush=True)
        app.block_thread()  # until Ctrl+C
    finally:
        app.close()
        service.close()
    return 0
