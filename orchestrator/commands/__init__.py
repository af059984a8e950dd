"""One module per CLI stage; each exposes ``register(subparsers)``.

Commands import their science package lazily inside the handler so that ``matscreen --help``
stays fast and stages that need no Ray never import it.
"""
