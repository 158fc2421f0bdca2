"""walkforward: write external trainers for walkforward sweeps (``walkforward.trainer``),
and submit sweeps and read their reports (``walkforward.Client``, ``open_report``).

The client's names load on first use, so a trainer imports only polars, never gRPC.
"""

__version__ = "0.1.0"

_CLIENT = ("Client", "Sweep", "Progress", "Tls", "WalkforwardError", "open_report")

__all__ = ["trainer", "__version__", *_CLIENT]


def __getattr__(name):
    import importlib

    if name in _CLIENT:
        return getattr(importlib.import_module(".client", __name__), name)
    if name in ("trainer", "client"):
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'walkforward' has no attribute {name!r}")
