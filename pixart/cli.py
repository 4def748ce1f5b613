"""The `pixart` command: argparse subcommands, each a thin layer over the Python API.

Each subcommand lives in `pixart/commands/<name>.py` with `add_arguments(parser)` and `run(args) -> int`.
Those modules import torch only inside `run`, so `pixart --help` is instant. Errors a user can fix
(`ValueError`, `OSError` such as a missing file, ...) become one `error: ...` line and exit code 2; anything else is a
bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# name -> one-line help. Order is the order shown by `pixart --help`.
COMMANDS = {
    "generate": "generate images from text prompts",
    "info": "print a model's config and parameter count",
    "convert": "convert a transformer checkpoint between the official, diffusers and pixart layouts",
    "prepare": "encode a dataset into a feature cache (T5 features + VAE latents) for training",
    "train": "train or fine-tune a transformer from a config file",
    "eval": "score prompt adherence in the emoji world (GenEval-style)",
    "serve": "web UI: generate images in a browser (and over HTTP)",
}


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps descriptions' line breaks (examples) and shows every flag's default."""


class UserError(Exception):
    """A problem with the user's input or files; the CLI prints it as one line."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pixart",
        description="PixArt-Σ text-to-image: generate, train, convert.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    parser.add_argument("-q", "--quiet", action="store_true", help="log only warnings and errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, help_text in COMMANDS.items():
        module = importlib.import_module(f"pixart.commands.{name}")
        p = sub.add_parser(
            name,
            help=help_text,
            description=(module.__doc__ or help_text).strip(),
            formatter_class=HelpFormatter,
        )
        module.add_arguments(p)
        p.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args._module.run(args) or 0)
    except (UserError, ValueError, OSError, KeyError) as e:
        message = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        print(f"error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
