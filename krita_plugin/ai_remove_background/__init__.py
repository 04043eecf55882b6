"""Krita plug-in: Filter > AI Remove Background adds a transparency mask that hides the background.

Inference runs in the engine's own Python process, which worker_client.py starts as engine.json
names it (install.py copies both here). This package uses only Krita's API, PyQt5 and the
standard library.
"""

from krita import Krita

from .extension import RemoveBackgroundExtension

# The registered instance. Scripts and tests read its `last_outcome`.
EXTENSION = RemoveBackgroundExtension(Krita.instance())
Krita.instance().addExtension(EXTENSION)
