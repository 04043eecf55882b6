"""Krita plug-in: Filter > AI Remove Background adds a transparency mask that hides the background.

Inference runs in the engine's own Python process (see worker_client.py, copied here by
install.py together with engine.json); this package uses only Krita's API, PyQt5 and the
standard library.
"""

from krita import Krita

from .extension import RemoveBackgroundExtension

# The registered instance; scripts and tests read its `last_outcome`.
EXTENSION = RemoveBackgroundExtension(Krita.instance())
Krita.instance().addExtension(EXTENSION)
