"""One module per `serve` subcommand, each with ``register(subparsers)``."""
