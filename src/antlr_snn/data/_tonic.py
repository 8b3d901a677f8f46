"""tonic, the event-data library, imported on first use: it is the ``[data]`` extra."""
from __future__ import annotations

from antlr_snn.errors import UserError


def require_tonic(what: str):
    """The ``tonic`` package (with its io, datasets and transforms loaded); a one-line
    :class:`~antlr_snn.errors.UserError` naming the extra when it is not installed.

    >>> require_tonic("N-MNIST").io.read_mnist_file.__name__
    'read_mnist_file'
    """
    try:
        import tonic
        import tonic.datasets  # noqa: F401
        import tonic.io  # noqa: F401
        import tonic.transforms  # noqa: F401
    except ImportError as exc:
        raise UserError(f"{what} is read with tonic, which is not installed ({exc}): "
                        "pip install 'antlr-snn[data]'") from None
    return tonic
