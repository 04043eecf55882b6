"""Test driver for the AI Remove Background plug-in. It does nothing unless AIRB_KRITA_SCENARIO is set."""

import os

from krita import Krita

if os.environ.get("AIRB_KRITA_SCENARIO"):
    from .driver import ScenarioDriver

    Krita.instance().addExtension(ScenarioDriver(Krita.instance()))
