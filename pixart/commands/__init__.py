"""One module per `pixart` subcommand: `add_arguments(parser)` and `run(args) -> int`."""
