"""ai-remove-background: cut the subject out of a photo with an ONNX segmentation model.

The engine imports no editor API. `remove_background` is the one entry point; the CLI and the
editors' worker process are thin shells over it.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .errors import UserError
from .pipeline import Options, remove_background

__all__ = ["Options", "UserError", "__version__", "remove_background"]
