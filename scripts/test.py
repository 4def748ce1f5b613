"""Quick start, command 2: set everything up and run the test suite (lint first). Extra args go to pytest."""

from __future__ import annotations

import sys

import _venv

if __name__ == "__main__":
    py = _venv.ensure("dev,train,ui")
    code = _venv.run([py, "-m", "ruff", "check", "pixart", "tests", "benchmarks", "scripts"])
    if code == 0:
        code = _venv.run([py, "-m", "pytest", "-q", *sys.argv[1:]])
    sys.exit(code)
