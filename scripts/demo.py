"""Quick start, command 1: set everything up and run the main job with the bundled model.

Until the bundled demo model lands, the main job is `pixart info` on the released 1024px preset.
"""

from __future__ import annotations

import sys

import _venv

if __name__ == "__main__":
    py = _venv.ensure("")
    sys.exit(_venv.run([py, "-m", "pixart.cli", "info", "PixArt-Sigma-XL-2-1024-MS", *sys.argv[1:]]))
