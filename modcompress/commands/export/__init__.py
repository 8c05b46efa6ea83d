"""One module per `export` subcommand, each with ``register(subparsers)``."""
