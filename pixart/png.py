"""PNG files with the generation parameters in a `parameters` text chunk, in the A1111 web UI's format.

That format is read by most image viewers, galleries and sharing sites for diffusion images:

    a photo of a cat
    Negative prompt: blurry
    Steps: 20, Sampler: dpm-solver++, CFG scale: 4.5, Seed: 42, Size: 1024x1024, Model: PixArt-Sigma-XL-2-1024-MS

The prompt may span several lines; the "Negative prompt:" line is left out when there is none (as A1111
does); the last line is `key: value` pairs, and a value containing a comma, colon or quote is JSON-quoted.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

_PAIR = re.compile(r'\s*([\w][\w \-/.]*):\s*("(?:\\.|[^\\"])*"|[^,]*)(?:,|$)')
_NEGATIVE = "Negative prompt: "


def _quote(value: object) -> str:
    text = str(value)
    return json.dumps(text) if any(c in text for c in ',:"\n') else text


def format_parameters(prompt: str, negative: str, settings: dict[str, object]) -> str:
    """The A1111 `parameters` text: prompt, optional negative line, then `Key: value, ...`."""
    lines = [prompt]
    if negative:
        lines.append(_NEGATIVE + negative)
    lines.append(", ".join(f"{key}: {_quote(value)}" for key, value in settings.items()))
    return "\n".join(lines)


def parse_parameters(text: str) -> tuple[str, str, dict[str, str]]:
    """Inverse of `format_parameters`: (prompt, negative prompt, {key: value as text})."""
    lines = text.split("\n")
    settings: dict[str, str] = {}
    if lines and _PAIR.match(lines[-1]) and "Steps:" in lines[-1]:
        for key, value in _PAIR.findall(lines.pop()):
            settings[key.strip()] = json.loads(value) if value.startswith('"') else value.strip()
    negative_at = next((i for i, line in enumerate(lines) if line.startswith(_NEGATIVE)), None)
    if negative_at is None:
        return "\n".join(lines), "", settings
    negative = "\n".join(lines[negative_at:])[len(_NEGATIVE) :]
    return "\n".join(lines[:negative_at]), negative, settings


def save_png(image, path: str | Path, parameters: str, *, overwrite: bool = False) -> Path:
    """Save a PIL image as PNG with a `parameters` text chunk; refuses to replace a file unless `overwrite`."""
    from PIL.PngImagePlugin import PngInfo

    path = Path(path)
    info = PngInfo()
    info.add_text("parameters", parameters)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Exclusive creation: a file that appeared since the caller checked is still never overwritten.
    with open(path, "wb" if overwrite else "xb") as f:
        image.save(f, format="PNG", pnginfo=info)
    return path


def read_parameters(path: str | Path) -> str | None:
    """The `parameters` text of a PNG, or None if it has none."""
    from PIL import Image

    with Image.open(path) as image:
        return image.text.get("parameters") if hasattr(image, "text") else image.info.get("parameters")
