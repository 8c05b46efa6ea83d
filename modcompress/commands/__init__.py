"""Command modules, one package per console script; each module has ``register(subparsers)``."""
