"""`pixart serve` in a real browser: Debian's chromium, headless, driven by playwright (no browser download).

Types a prompt, picks a non-square size, clicks Generate, and checks the gallery shows a real PNG of that size
and that the download link serves the PNG with its parameters. Screenshots land in test-artifacts/. Skipped
only when chromium or playwright is missing (CI: `apt-get install chromium`, `pip install playwright`).
"""

from __future__ import annotations

import io
import re
import shutil
from pathlib import Path

import pytest
from PIL import Image

from pixart.png import parse_parameters
from pixart.webui import Service, model_folders, open_models
from tests.test_pipeline import make_tiny, one_thread, write_pipeline_folder  # noqa: F401 (autouse fixture)
from tests.test_webui import TINY, start

CHROMIUM = Path("/usr/bin/chromium")
# The machine has no network: nothing may try to reach one, and the profile is a fresh folder.
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]  # fmt: skip
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
TIMEOUT_MS = 60_000

if not CHROMIUM.is_file() and not shutil.which("chromium"):
    pytest.skip("Debian's chromium is not installed (apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
expect = sync_api.expect


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    root = tmp_path_factory.mktemp("browser")
    service = Service(open_models(model_folders([write_pipeline_folder(make_tiny(root), root / TINY)])))
    app, url = start(service, concurrency=1)
    yield url
    app.close()
    service.close()


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    executable = CHROMIUM if CHROMIUM.is_file() else Path(shutil.which("chromium"))
    with sync_api.sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            tmp_path_factory.mktemp("chromium-profile"), executable_path=executable, headless=True, args=FLAGS,
            viewport={"width": 1280, "height": 900},
        )  # fmt: skip
        context.set_default_timeout(TIMEOUT_MS)
        expect.set_options(timeout=TIMEOUT_MS)
        yield context.new_page()
        context.close()


def test_generate_in_the_browser(url, page):
    page.goto(url)
    page.locator("#prompt textarea").fill("a red apple on a wooden table")
    page.locator("#size input").click()
    page.get_by_role("option", name="96×48 (2:1)").click()
    page.locator("#steps input[type=number]").fill("3")
    page.locator("#n input[type=number]").fill("2")
    page.locator("#generate").click()

    images = page.locator("#gallery img")
    images.nth(1).wait_for()
    for k in range(2):
        png = page.request.get(images.nth(k).get_attribute("src")).body()
        with Image.open(io.BytesIO(png)) as shown:
            assert (shown.format, shown.size) == ("PNG", (96, 48))
            assert shown.getextrema() != ((0, 0), (0, 0), (0, 0))  # a real image, not a blank
    seed = page.locator("#seed-used input").input_value()
    assert seed.isdigit()  # the random seed that was used is shown

    links = page.locator("#files a")
    with Image.open(io.BytesIO(page.request.get(links.nth(1).get_attribute("href")).body())) as download:
        prompt, _, settings = parse_parameters(download.text["parameters"])
    assert prompt == "a red apple on a wooden table"
    assert (settings["Seed"], settings["Size"], settings["Steps"]) == (str(int(seed) + 1), "96x48", "3")
    images.nth(1).click()  # selecting an image shows its parameters
    expect(page.locator("#parameters textarea")).to_have_value(re.compile(f"Seed: {int(seed) + 1},"))
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "webui-generate.png", full_page=True)


def test_an_invalid_size_is_an_error_message_in_the_page(url, page):
    page.goto(url)
    page.locator("#prompt textarea").fill("a red apple")
    page.locator("#size input").fill("100x64")
    page.locator("#size input").press("Enter")
    page.locator("#generate").click()
    toast = page.locator(".toast-body", has_text="width 100 is not allowed")
    toast.wait_for()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "webui-error.png", full_page=True)
    page.locator("#size input").fill("64x64")  # the same page still works afterwards
    page.locator("#size input").press("Enter")
    page.locator("#generate").click()
    page.locator("#gallery img").first.wait_for()
