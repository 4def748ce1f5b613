"""Create and refresh the project's virtual environment (`.venv`) with nothing but python3 and pip.

Used by the two quick-start commands (`scripts/demo.py`, `scripts/test.py`). Installs `-e .[extras]` under
`constraints.txt`, and only when pyproject.toml or constraints.txt changed since the last install.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")


def python() -> str:
    return str(BIN / ("python.exe" if os.name == "nt" else "python"))


def ensure(extras: str) -> str:
    """Make `.venv` exist with the project installed (editable) with `extras`; return its python."""
    if not (BIN / "python").exists() and not (BIN / "python.exe").exists():
        print(f"creating {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    digest = hashlib.sha256()
    for name in ("pyproject.toml", "constraints.txt"):
        digest.update((ROOT / name).read_bytes())
    digest.update(extras.encode())
    stamp = VENV / f".installed-{extras.replace(',', '-') or 'base'}"
    if stamp.exists() and stamp.read_text() == digest.hexdigest():
        return python()
    print(f"installing pixart-sigma[{extras}] into {VENV} (first run takes a few minutes)", flush=True)
    target = f".[{extras}]" if extras else "."
    subprocess.run(
        [python(), "-m", "pip", "install", "-q", "-c", "constraints.txt", "-e", target], cwd=ROOT, check=True
    )
    stamp.write_text(digest.hexdigest())
    return python()


def run(args: list[str]) -> int:
    """Run a command with the venv's bin first on PATH; return its exit code."""
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", VIRTUAL_ENV=str(VENV))
    return subprocess.run(args, cwd=ROOT, env=env).returncode


if __name__ == "__main__":
    ensure(sys.argv[1] if len(sys.argv) > 1 else "")
