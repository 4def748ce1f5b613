"""The web UI that `pixart serve` launches: `build_app(Service(models))` -> a gradio Blocks app.

One page: prompt, negative prompt, model, size (the model's aspect-ratio bins or an explicit width × height),
sampler, steps, CFG, seed and number of images; a Generate button with per-step progress; a gallery of the
results with their parameters, and the PNG files, carrying the same `parameters` text as `pixart generate`
writes, to download. The Generate event is also the HTTP API endpoint `/generate`:

    from gradio_client import Client
    gallery, files, parameters, seed = Client("http://127.0.0.1:7860/").predict(
        "a lighthouse at dawn", "", "PixArt-Sigma-XL-2-1024-MS", "1344x768", None, None,
        "dpm-solver++", 20, 4.5, -1, 1, api_name="/generate")

The page is something a user trusts with a local machine, so the server treats every value it receives as
untrusted: each one is checked with the CLI's rules (`Service.check`), a model is chosen by its key in the
list the server was started with (never by a path), files are only ever written by the server into its own
temporary folder, and a request that fails becomes an error message (in the page, or over the API) and never
stops the server.

gradio and torch are imported inside the functions that use them, so importing this module is instant.
"""

# No `from __future__ import annotations` here: gradio reads the event handlers' annotations (`gr.SelectData`)
# as live objects, and `gr` is only in scope inside `build_app`.

import html
import logging
import math
import random
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pixart.aspect import MAX_SIDE, bins_for, check_size, parse_size, size_for_aspect
from pixart.commands.generate import _number, _slug
from pixart.diffusion.schedules import SAMPLERS, get_sampler

logger = logging.getLogger(__name__)

MAX_IMAGES = 4  # per request; `pixart serve --max-images` changes it
MAX_STEPS = 200  # per image: 200 steps is already 10x any sampler's default
MAX_PROMPT_CHARS = 10_000  # T5 reads the first 300 tokens anyway
QUEUE_SIZE = 64  # requests waiting beyond this are refused ("queue full") instead of piling up
KEEP_FILES_S = 3600  # generated PNGs are deleted after an hour
RANDOM_SEED = -1
CUSTOM = "custom"
BUNDLED_KEY = "demo (bundled)"
DEFAULT_SAMPLER = "dpm-solver++"

Progress = Callable[[int, int, str], None]  # (steps done, steps in all, what is running)


# ---- models --------------------------------------------------------------------------------------------------------


def model_folders(paths: list[str | Path], bundled: Path | None = None) -> dict[str, Path]:
    """The model picker's entries, key -> folder: the bundled demo model when it is installed, then each `--model`.

    Keys are folder names, made unique with ' (2)', ' (3)', ...; a key is all the browser ever sends.
    Raises ValueError when a path is not a folder or when there is no model at all.
    """
    folders: dict[str, Path] = {}
    if bundled is not None and bundled.is_dir():
        folders[BUNDLED_KEY] = bundled.resolve()
    for given in paths:
        path = Path(given).expanduser()
        if not path.is_dir():
            raise ValueError(
                f"--model {str(given)!r} is not a folder; pixart serve takes diffusers-layout PixArt-Σ pipeline "
                "folders (transformer/, text_encoder/, tokenizer/, vae/)"
            )
        path = path.resolve()
        if path in folders.values():
            continue
        key, k = path.name, 2
        while key in folders:
            key, k = f"{path.name} ({k})", k + 1
        folders[key] = path
    if not folders:
        raise ValueError(
            "no model to serve: no demo model is bundled with this version; pass --model PATH "
            "(a diffusers-layout PixArt-Σ pipeline folder, repeatable)"
        )
    return folders


def open_models(folders: dict[str, Path], *, device: str | None = None, dtype=None) -> dict:
    """A lazy `Text2Image` per folder. The folders and config headers are checked now (a broken folder fails at
    startup, not on the first request); the weights load on first use and then stay loaded, T5 included."""
    from pixart.pipeline import Text2Image

    pipes = {}
    for key, folder in folders.items():
        pipe = Text2Image.from_pretrained(folder, device=device, dtype=dtype, keep_text_encoder=True)
        pipe.native_size  # noqa: B018 (reads the transformer's config header)
        pipes[key] = pipe
    return pipes


def size_choices(native_size: int) -> list[tuple[str, str]]:
    """The model's aspect-ratio bins as picker entries (label 'W×H (w:h)', value 'WxH'), widest first, then
    a custom entry."""
    choices, seen = [], set()
    for height, width in sorted(bins_for(native_size).values(), key=lambda hw: hw[0] / hw[1]):
        if (width, height) not in seen:
            seen.add((width, height))
            choices.append((f"{width}×{height} ({_ratio(width, height)})", f"{width}x{height}"))
    return choices + [("custom width × height", CUSTOM)]


def _ratio(width: int, height: int) -> str:
    g = math.gcd(width, height)
    a, b = width // g, height // g
    return f"{a}:{b}" if max(a, b) <= 21 else f"{width / height:.2f}:1"


# ---- requests ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """One generation request, validated."""

    prompt: str
    negative: str
    model: str  # a key of `Service.pipes`
    width: int
    height: int
    sampler: str
    steps: int
    cfg: float
    seed: int  # of image 0; image k uses seed + k, as `pixart generate`
    n: int


def _as_text(value: object) -> str | None:
    """A form or API value as the CLI would read it from its command line; None when left empty."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # a number field sends 20.0 for 20
    return str(value).strip()


def _text(name: str, value: object, limit: int = MAX_PROMPT_CHARS) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"{name}: expected text, got {type(value).__name__}")
    if len(value) > limit:
        raise ValueError(f"{name}: {len(value)} characters; at most {limit} are allowed")
    return value


# ---- the service: what the app's events call ------------------------------------------------------------------------


class Service:
    """Validated requests in, PNG files out; safe to call from several threads at once.

    Args:
        pipes: model key -> `Text2Image` (see `open_models`); the keys are the model picker's entries.
        max_images, max_steps: the most images per request and sampler steps per image.
        output_dir: where PNGs are written (a fresh temporary folder when None, deleted by `close`).
    """

    def __init__(self, pipes: dict, *, max_images: int = MAX_IMAGES, max_steps: int = MAX_STEPS, output_dir=None):
        if not pipes:
            raise ValueError("no model to serve")
        self.pipes = dict(pipes)
        self.max_images, self.max_steps = max_images, max_steps
        self._own_dir = output_dir is None
        self.output_dir = Path(tempfile.mkdtemp(prefix="pixart-serve-") if output_dir is None else output_dir)
        self._load_lock = threading.Lock()
        self._loaded: set[str] = set()
        # A fast tokenizer fails ("Already borrowed") when two threads use it at once; encoding is cheap.
        self._text_locks = {key: threading.Lock() for key in self.pipes}

    def close(self) -> None:
        """Delete the PNGs (when the folder is the service's own)."""
        if self._own_dir:
            shutil.rmtree(self.output_dir, ignore_errors=True)

    def check(self, prompt, negative, model, size, width, height, sampler, steps, cfg, seed, n) -> Request:
        """Every value from the page or the API, checked with `pixart generate`'s rules; raises ValueError
        naming the value and what is allowed. `size` is 'WxH', 'W:H' (the closest bin) or 'custom' (then
        `width` and `height`); `steps`/`cfg` None mean the sampler's defaults; `seed` None or -1 means random."""
        prompt = _text("prompt", prompt)
        if not prompt.strip():
            raise ValueError("no prompt: describe the image to generate")
        negative = _text("negative prompt", negative)
        model = _text("model", model, 200)
        if model not in self.pipes:
            raise ValueError(f"unknown model {model!r}; allowed: {', '.join(self.pipes)}")
        spec = get_sampler(_text("sampler", sampler, 100))
        steps = _number("steps", _as_text(steps), int, minimum=1, allowed=f"an integer from 1 to {self.max_steps}")
        if steps is not None and steps > self.max_steps:
            raise ValueError(f"steps {steps}: must be an integer from 1 to {self.max_steps}")
        cfg = _number("CFG", _as_text(cfg), float, minimum=0, allowed="a finite number >= 0 (1 = no guidance)")
        n = _number("images", _as_text(n) or "1", int, minimum=1, allowed=f"an integer from 1 to {self.max_images}")
        if n > self.max_images:
            raise ValueError(f"images {n}: must be an integer from 1 to {self.max_images}")
        seed_text = _as_text(seed)
        if seed_text is None or seed_text == str(RANDOM_SEED):
            seed = random.randrange(2**32)
        else:
            seed = _number("seed", seed_text, int, minimum=0, allowed="-1 (random) or an integer from 0 to 2**63 - 1")
            if seed >= 2**63:
                raise ValueError(f"seed {seed}: must be -1 (random) or an integer from 0 to 2**63 - 1")
        width, height = self._size(model, size, width, height)
        steps = spec.steps if steps is None else steps
        cfg = spec.cfg if cfg is None else cfg
        return Request(prompt, negative, model, width, height, spec.name, steps, cfg, seed, n)

    def _size(self, model: str, size, width, height) -> tuple[int, int]:
        pipe = self.pipes[model]
        multiple = 8 * pipe.model_config.patch_size
        allowed = f"a multiple of {multiple} from {multiple} to {MAX_SIDE} px"
        text = _text("size", size, 100).strip().lower()
        if text in ("", CUSTOM):
            w = _number("width", _as_text(width), int, minimum=1, allowed=allowed)
            h = _number("height", _as_text(height), int, minimum=1, allowed=allowed)
            if w is None or h is None:
                raise ValueError("custom size: give both width and height in pixels")
        elif ":" in text:
            w, h = size_for_aspect(text, pipe.native_size)
        else:
            w, h = parse_size(text)
        check_size(w, h, multiple=multiple, what=f"size {w}x{h}")
        return w, h

    def pipeline(self, key: str):
        """The model's pipeline with every component loaded. Loads once: concurrent first requests wait for it."""
        pipe = self.pipes[key]
        with self._load_lock:
            if key not in self._loaded:
                logger.info("loading model %s", key)
                pipe.text_encoder, pipe.transformer, pipe.vae  # noqa: B018 (each loads on first access)
                self._loaded.add(key)
        return pipe

    def generate(self, req: Request, progress: Progress | None = None) -> list[tuple[Path, str]]:
        """Generate `req.n` images one at a time (image k with seed `req.seed + k`) and save each as a PNG with
        its `parameters` text; returns [(path, parameters)]."""
        from pixart.png import format_parameters, save_png

        progress = progress or (lambda done, total, desc: None)
        progress(0, req.n * req.steps, f"loading {req.model}" if req.model not in self._loaded else "encoding")
        pipe = self.pipeline(req.model)
        pipe.estimate_memory(req.width, req.height, guided=req.cfg != 1.0).check()
        with self._text_locks[req.model]:
            text = pipe.encode(req.prompt, req.negative)
        # The keys and order of `pixart generate`, so a PNG from either reads the same.
        settings = {"Steps": req.steps, "Sampler": req.sampler, "CFG scale": req.cfg, "Seed": None,
                    "Size": f"{req.width}x{req.height}", "Model": pipe.name}  # fmt: skip
        folder = self._new_folder()
        results = []
        for k in range(req.n):
            seed = req.seed + k
            image = pipe.generate(
                text, width=req.width, height=req.height, steps=req.steps, cfg=req.cfg, sampler=req.sampler,
                seed=seed, check_memory=False, callback=_step_callback(progress, k, req),
            )[0]  # fmt: skip
            parameters = format_parameters(req.prompt, req.negative, {**settings, "Seed": seed})
            path = save_png(image, folder / f"{k:02d}-{seed}-{_slug(req.prompt)}.png", parameters)
            results.append((path, parameters))
        return results

    def _new_folder(self) -> Path:
        """A fresh folder for one request's files; folders older than KEEP_FILES_S are deleted first."""
        cutoff = time.time() - KEEP_FILES_S
        for old in self.output_dir.glob("*"):
            if old.is_dir() and old.stat().st_mtime < cutoff:
                shutil.rmtree(old, ignore_errors=True)
        folder = self.output_dir / uuid.uuid4().hex
        folder.mkdir(parents=True)
        return folder


def _step_callback(progress: Progress, k: int, req: Request):
    """The pipeline's per-step callback for image k, as progress over the whole request."""
    return lambda i, *_: progress(k * req.steps + i + 1, req.n * req.steps, f"image {k + 1}/{req.n}")


def error_message(error: Exception) -> str:
    """One line for the page or the API client. The user's mistakes say what is wrong; anything else is logged
    with its traceback and reported without internals."""
    if isinstance(error, (ValueError, KeyError, OSError)):
        return error.args[0] if isinstance(error, KeyError) and error.args else str(error)
    if isinstance(error, MemoryError) or type(error).__name__ == "OutOfMemoryError":
        return "out of memory: try a smaller size or fewer images"
    logger.error("request failed", exc_info=error)
    return f"generation failed ({type(error).__name__}); the server's log has the details"


def _caption(req: Request, seed: int) -> str:
    prompt = req.prompt if len(req.prompt) <= 60 else req.prompt[:57] + "..."
    return f"{prompt} · seed {seed} · {req.width}×{req.height} · {req.sampler} {req.steps} steps · CFG {req.cfg:g}"


# ---- the app -------------------------------------------------------------------------------------------------------


def build_app(service: Service, *, concurrency: int = 1):
    """The gradio Blocks app over `service`, with its queue set up: `concurrency` requests run at once, up to
    QUEUE_SIZE wait. Launch it with `app.launch(server_name="127.0.0.1", server_port=...)`."""
    import gradio as gr

    first = next(iter(service.pipes))
    native = service.pipes[first].native_size
    spec = get_sampler(DEFAULT_SAMPLER)

    bar = gr.Progress()  # as a default argument it makes gradio report this event's progress

    def on_generate(prompt, negative, model, size, width, height, sampler, steps, cfg, seed, n, progress=bar):
        """The `/generate` endpoint; its arguments are `Service.check`'s."""
        try:
            req = service.check(prompt, negative, model, size, width, height, sampler, steps, cfg, seed, n)
            results = service.generate(req, lambda done, total, desc: progress((done, total), desc, unit="steps"))
        except Exception as e:  # the server outlives every request; the message goes to the page or API client
            # gr.Error renders its message as HTML, and messages quote the user's input.
            raise gr.Error(html.escape(error_message(e), quote=False), print_exception=False) from None
        gallery = [(str(path), _caption(req, req.seed + k)) for k, (path, _) in enumerate(results)]
        texts = [text for _, text in results]
        return gallery, [str(path) for path, _ in results], texts[0], req.seed, texts

    def on_select(texts, event: gr.SelectData):
        return texts[event.index] if isinstance(event.index, int) and 0 <= event.index < len(texts) else gr.update()

    def on_model(model):
        if model not in service.pipes:
            return gr.update(), gr.update(), gr.update()
        side = service.pipes[model].native_size
        return gr.update(choices=size_choices(side), value=f"{side}x{side}"), side, side

    def on_sampler(sampler):
        if sampler not in SAMPLERS:
            return gr.update(), gr.update()
        return SAMPLERS[sampler].steps, SAMPLERS[sampler].cfg

    with gr.Blocks(title="PixArt-Σ", analytics_enabled=False, delete_cache=(KEEP_FILES_S, KEEP_FILES_S)) as app:
        gr.Markdown("# PixArt-Σ text-to-image")
        with gr.Row():
            with gr.Column(scale=2):
                prompt = gr.Textbox(label="Prompt", lines=3, elem_id="prompt",
                                    placeholder="a small cactus with a happy face in the Sahara desert")  # fmt: skip
                negative = gr.Textbox(label="Negative prompt", lines=2, elem_id="negative",
                                      placeholder="optional: what to steer away from")  # fmt: skip
                generate = gr.Button("Generate", variant="primary", elem_id="generate")
                model = gr.Dropdown(list(service.pipes), value=first, label="Model", elem_id="model")
                size = gr.Dropdown(size_choices(native), value=f"{native}x{native}", label="Size: W×H (aspect ratio)",
                                   allow_custom_value=True, elem_id="size")  # fmt: skip
                with gr.Row(visible=False) as custom:
                    width = gr.Number(native, label="Width (px)", step=16, elem_id="width")
                    height = gr.Number(native, label="Height (px)", step=16, elem_id="height")
                with gr.Row():
                    sampler = gr.Dropdown(list(SAMPLERS), value=spec.name, label="Sampler", elem_id="sampler")
                    steps = gr.Slider(1, service.max_steps, value=spec.steps, step=1, label="Steps", elem_id="steps")
                    cfg = gr.Number(spec.cfg, label="CFG scale (1 = none)", step=0.5, elem_id="cfg")
                with gr.Row():
                    seed = gr.Number(RANDOM_SEED, label="Seed (-1 = random)", elem_id="seed")
                    n = gr.Slider(1, service.max_images, value=1, step=1, label="Images", elem_id="n")
                with gr.Row():
                    reuse = gr.Button("Reuse last seed", size="sm")
                    randomize = gr.Button("Random seed", size="sm")
            with gr.Column(scale=3):
                texts = gr.State([])  # the parameters of each image in the gallery
                gallery = gr.Gallery(label="Results", columns=2, object_fit="contain", interactive=False,
                                     buttons=["download", "fullscreen"],  # no "share": nothing leaves the machine
                                     elem_id="gallery")  # fmt: skip
                used = gr.Number(label="Seed used", precision=0, interactive=False, elem_id="seed-used")
                parameters = gr.Textbox(label="Parameters (of the selected image)", lines=4, interactive=False,
                                        elem_id="parameters")  # fmt: skip
                files = gr.File(label="PNG files (with their parameters)", file_count="multiple", interactive=False,
                                elem_id="files")  # fmt: skip

        # UI helpers answer at once (no queue) and are not part of the API.
        private = {"queue": False, "api_visibility": "private"}
        model.change(on_model, model, [size, width, height], **private)
        size.change(lambda s: gr.update(visible=s == CUSTOM), size, custom, **private)
        sampler.change(on_sampler, sampler, [steps, cfg], **private)
        reuse.click(lambda s: RANDOM_SEED if s is None else s, used, seed, **private)
        randomize.click(lambda: RANDOM_SEED, None, seed, **private)
        gallery.select(on_select, texts, parameters, **private)
        generate.click(
            on_generate,
            [prompt, negative, model, size, width, height, sampler, steps, cfg, seed, n],
            [gallery, files, parameters, used, texts],
            api_name="generate",
            concurrency_limit=concurrency,
        )
    app.queue(default_concurrency_limit=concurrency, max_size=QUEUE_SIZE)
    return app
