"""aggbook: per-venue L2 order books merged into one consolidated view.

The repository root is this package: ``book/``, ``feeds/``, ``proto/``, ``service/`` and
``simulator/`` install as ``aggbook.book``, ``aggbook.feeds`` and so on (``package-dir`` in
``pyproject.toml``), so site-packages holds ``aggbook`` alone and nothing here can clash with
another project's ``service`` or ``book``.  The simulator is imported only by ``aggbook demo`` and
``aggbook simulate``; ``aggbook serve`` never loads it.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("aggbook")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
