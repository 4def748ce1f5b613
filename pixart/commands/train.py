"""Train or fine-tune a PixArt-Σ transformer from a TOML/YAML config.

Single process: `pixart train CONFIG`. Many GPUs or machines: launch the same command through
`accelerate launch -m pixart.cli train CONFIG` or `torchrun --nproc_per_node N -m pixart.cli train CONFIG`.
A run resumes from the newest checkpoint in its output_dir by itself.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", nargs="?", help="training config file (.toml, .yaml); omit to use only --set")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set optim.lr=1e-4 --set data.cache=cache/ "
        "(repeatable; values parsed as JSON when possible)",
    )
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")


def run(args: argparse.Namespace) -> int:
    import json

    from pixart.train.config import load_train_config

    cfg = load_train_config(args.config, args.overrides)
    if args.print_config:
        print(json.dumps(cfg.to_dict(), indent=2))
        return 0
    from pixart.train.loop import main

    main(cfg)
    return 0
