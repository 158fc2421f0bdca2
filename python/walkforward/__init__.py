"""walkforward: write external trainers for walkforward sweeps (``walkforward.trainer``)."""

__version__ = "0.1.0"

from . import trainer  # noqa: E402

__all__ = ["trainer", "__version__"]
