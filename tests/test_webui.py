"""`pixart serve`: the model list, request validation, loading once, and the app over HTTP (gradio_client).

One server per module (gradio's import and startup take seconds on a shared CPU): a tiny random model, two
requests at a time. The real-browser test is tests/test_webui_browser.py.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pixart.commands import serve
from pixart.commands.generate import BUNDLED_MODEL
from pixart.png import format_parameters, parse_parameters, read_parameters
from pixart.webui import BUNDLED_KEY, Service, error_message, model_folders, open_models, size_choices
from tests.test_pipeline import make_tiny, one_thread, write_pipeline_folder  # noqa: F401 (autouse fixture)

TINY = "PixArt-Tiny"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("webui")
    return write_pipeline_folder(make_tiny(root), root / TINY)


@pytest.fixture(scope="module")
def service(model_dir):
    service = Service(open_models(model_folders([model_dir])), max_images=3)
    yield service
    service.close()


def start(service: Service, concurrency: int = 2):
    """Build the app over `service` and launch it on a free loopback port, in this process; returns (app, url)."""
    from pixart.webui import build_app

    app = build_app(service, concurrency=concurrency)
    port = serve.free_port("127.0.0.1")
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, share=False,
               ssr_mode=False)  # fmt: skip
    return app, f"http://127.0.0.1:{port}/"


@pytest.fixture(scope="module")
def client(service, tmp_path_factory):
    from gradio_client import Client

    app, url = start(service)
    yield Client(url, verbose=False, download_files=str(tmp_path_factory.mktemp("downloads")))
    app.close()


def request(prompt="a cat on a red sofa", *, negative="", model=TINY, size="96x64", width=None, height=None,
        sampler="dpm-solver++", steps=2, cfg=4.5, seed=7, n=1):  # fmt: skip
    """The arguments of `/generate` (and of `Service.check`), by their names."""
    return dict(prompt=prompt, negative=negative, model=model, size=size, width=width, height=height,
                sampler=sampler, steps=steps, cfg=cfg, seed=seed, n=n)  # fmt: skip


# ---- the model list and the command --------------------------------------------------------------------------------


def test_model_picker_lists_the_bundled_model_then_each_folder(tmp_path):
    bundled, a, b = (tmp_path / "demo", tmp_path / "x" / "model", tmp_path / "y" / "model")
    for folder in (bundled, a, b):
        folder.mkdir(parents=True)
    folders = model_folders([a, b, a], bundled)
    assert folders == {BUNDLED_KEY: bundled, "model": a, "model (2)": b}
    assert list(model_folders([a], tmp_path / "not-installed")) == ["model"]
    with pytest.raises(ValueError, match="not a folder"):
        model_folders([tmp_path / "missing"], bundled)


def test_serve_without_any_model_is_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(serve, "BUNDLED_MODEL", tmp_path / "not-installed")
    parser = argparse.ArgumentParser()
    serve.add_arguments(parser)
    with pytest.raises(ValueError, match="no model to serve.*--model PATH") as e:
        serve.run(parser.parse_args([]))
    assert "\n" not in str(e.value)
    bad = {"--port": "70000", "--concurrency": "0", "--max-images": "x", "--dtype": "fp8", "--device": "tpu"}
    for flag, value in bad.items():
        with pytest.raises(ValueError, match=f"{flag} '?{value}'?: "):
            serve.run(parser.parse_args([flag, value]))


def test_nothing_heavy_at_import():
    code = "import sys, pixart.commands.serve, pixart.webui; print(sorted({'torch', 'gradio'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_size_choices_are_the_models_bins():
    choices = dict((value, label) for label, value in size_choices(1024))
    assert choices["1024x1024"] == "1024×1024 (1:1)" and choices["1344x768"] == "1344×768 (7:4)"
    assert list(choices)[0] == "2048x512" and list(choices)[-1] == "custom"


# ---- validation, without a server ---------------------------------------------------------------------------------


def check(service, **changes):
    values = request(**changes)
    return service.check(*values.values())


def test_a_valid_request_gets_the_samplers_defaults_and_a_seed(service):
    req = check(service, size="custom", width=64.0, height=48, sampler="ddim", steps=None, cfg=None, seed=-1, n=3.0)
    assert (req.width, req.height, req.sampler, req.steps, req.cfg, req.n) == (64, 48, "ddim", 50, 4.5, 3)
    assert 0 <= req.seed < 2**32
    assert check(service, size="2:1").width == 2 * check(service, size="2:1").height


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"prompt": "  "}, "no prompt"),
        ({"prompt": "x" * 10_001}, "at most 10000"),
        ({"prompt": ["a", "list"]}, "prompt: expected text"),
        ({"model": "../../etc"}, "unknown model '../../etc'"),
        ({"sampler": "plms"}, "unknown sampler 'plms'"),
        ({"steps": 0}, "steps 0: must be an integer from 1 to 200"),
        ({"steps": 201}, "steps 201"),
        ({"steps": 2.5}, "steps '2.5'"),
        ({"cfg": -1}, "CFG -1"),
        ({"cfg": float("nan")}, "CFG nan"),
        ({"cfg": "inf"}, "CFG inf"),
        ({"n": 4}, "images 4: must be an integer from 1 to 3"),
        ({"n": 0}, "images 0"),
        ({"seed": -2}, "seed -2"),
        ({"seed": 2**63}, "seed 9223372036854775808"),
        ({"size": "100x64"}, "width 100 is not allowed"),
        ({"size": "64x99999"}, "height 99999"),
        ({"size": "big"}, "expected WIDTHxHEIGHT"),
        ({"size": "1:9"}, "between 1:5 and 5:1"),
        ({"size": "custom", "width": 64}, "give both width and height"),
        ({"size": "custom", "width": -16, "height": 64}, "width -16"),
    ],
)
def test_every_value_is_checked_with_the_clis_rules(service, changes, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        check(service, **changes)


def test_each_model_loads_once_under_concurrent_first_requests():
    class SlowPipe:
        loads = 0

        @property
        def text_encoder(self):
            SlowPipe.loads += 1
            time.sleep(0.2)

        transformer = vae = None

    service = Service({"slow": SlowPipe()})
    threads = [threading.Thread(target=service.pipeline, args=("slow",)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    service.close()
    assert SlowPipe.loads == 1


def test_progress_counts_every_step_of_every_image(service):
    calls = []
    req = check(service, steps=3, n=2, seed=3, size="32x32")
    results = service.generate(req, lambda done, total, desc: calls.append((done, total)))
    assert [done for done, _ in calls] == list(range(7)) and {total for _, total in calls} == {6}
    assert [Image.open(path).size for path, _ in results] == [(32, 32)] * 2


# ---- the app over HTTP ----------------------------------------------------------------------------------------------


def test_api_generates_pngs_exactly_as_the_cli(client, model_dir, tmp_path):
    from pixart.cli import main

    gallery, files, parameters, seed = client.predict(**request(negative="blurry, dark", n=2), api_name="/generate")
    assert seed == 7 and len(gallery) == len(files) == 2
    assert [Image.open(item["image"]).size for item in gallery] == [(96, 64)] * 2
    settings = {"Steps": 2, "Sampler": "dpm-solver++", "CFG scale": 4.5, "Seed": 8, "Size": "96x64", "Model": TINY}
    assert read_parameters(files[1]) == format_parameters("a cat on a red sofa", "blurry, dark", settings)
    assert parse_parameters(parameters)[2]["Seed"] == "7"  # the first image's

    out = tmp_path / "cli.png"
    args = ["a cat on a red sofa", "--negative", "blurry, dark", "--model", model_dir, "--size", "96x64", "--steps",
            "2", "--seed", "8", "--out", out]  # fmt: skip
    assert main(["generate", *map(str, args)]) == 0
    assert read_parameters(out) == read_parameters(files[1])
    served, cli = (torch.from_numpy(np.asarray(Image.open(p), dtype=np.int16)) for p in (files[1], out))
    assert (served - cli).abs().max() <= 1  # same seed, same settings: the same image (up to 8-bit rounding)


def test_eight_concurrent_requests_are_all_answered(client, service):
    transformer = service.pipes[TINY].transformer
    jobs = [client.submit(**request(prompt=f"request {i}", seed=100 + i), api_name="/generate") for i in range(8)]
    seeds = [job.result(timeout=300)[3] for job in jobs]
    assert seeds == [100 + i for i in range(8)]
    assert service.pipes[TINY].transformer is transformer  # loaded once, shared by every request


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"prompt": ""}, "no prompt"),
        ({"size": "100x64"}, "width 100 is not allowed"),
        ({"cfg": -1}, "CFG -1"),
        ({"seed": -5}, "seed -5"),
        ({"steps": 2.5}, "steps '2.5'"),
        ({"size": "<img src=x onerror=alert(1)>"}, "&lt;img src=x"),  # the page renders errors as HTML
        ({"model": "/etc"}, "not in the list of choices"),  # gradio's own check comes first
        ({"steps": 1000}, "Value 1000 is greater than maximum value 200"),  # the sliders' bounds, checked by gradio
        ({"n": 4}, "Value 4 is greater than maximum value 3"),
    ],
)
def test_invalid_inputs_are_answered_with_errors(client, changes, message):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match=message.replace("(", r"\(")):
        client.predict(**request(**changes), api_name="/generate")


def test_a_crash_inside_a_request_is_an_error_without_internals(client, service, monkeypatch, caplog):
    from gradio_client.exceptions import AppError

    def crash(*args, **kwargs):
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(service, "generate", crash)
    with pytest.raises(AppError) as e:
        client.predict(**request(), api_name="/generate")
    assert "generation failed (RuntimeError)" in str(e.value) and "secret" not in str(e.value)
    assert "secret internal detail" in caplog.text  # the traceback goes to the server's log
    assert error_message(MemoryError()).startswith("out of memory")


def test_the_server_still_answers_after_errors(client):
    gallery, *_ = client.predict(**request(size="32x32"), api_name="/generate")
    assert Image.open(gallery[0]["image"]).size == (32, 32)


# ---- the bundled model ---------------------------------------------------------------------------------------------


@pytest.mark.skipif(not BUNDLED_MODEL.is_dir(), reason="no bundled demo model at pixart/assets/demo yet")
def test_serves_the_bundled_model(tmp_path):
    from gradio_client import Client

    service = Service(open_models(model_folders([], BUNDLED_MODEL)))
    app, url = start(service, concurrency=1)
    try:
        side = service.pipes[BUNDLED_KEY].native_size
        values = request(model=BUNDLED_KEY, size=f"{side}x{side}", steps=2)
        gallery, *_ = Client(url, verbose=False, download_files=str(tmp_path)).predict(**values, api_name="/generate")
        assert Image.open(gallery[0]["image"]).size == (side, side)
    finally:
        app.close()
        service.close()
