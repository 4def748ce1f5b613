"""Quick start, command 1: set everything up and run the main job with the bundled model.

The main job is `pixart generate` with the bundled demo model (pixart/assets/demo) and its defaults: one image
of DEMO_PROMPT, written under outputs/ (its path is printed). Extra arguments are passed on, e.g.
`python3 scripts/demo.py --aspect 16:9 --seed 3`, or a prompt of your own as the first argument.
"""

from __future__ import annotations

import sys

import _venv

DEMO_PROMPT = "a red apple next to a cat on a blue background"

if __name__ == "__main__":
    py = _venv.ensure("")
    args = sys.argv[1:]
    prompt = [] if args and not args[0].startswith("-") else [DEMO_PROMPT]
    sys.exit(_venv.run([py, "-m", "pixart.cli", "generate", *prompt, *args]))
