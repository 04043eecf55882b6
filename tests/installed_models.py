"""The check that tests running real models make first: are those models installed?"""

from __future__ import annotations

import pytest

from ai_remove_background.catalogue import installed_model_names


def require_models(*names: str) -> None:
    """Fail the calling test, naming the install command, unless every model in `names` is installed."""
    missing = [name for name in names if name not in installed_model_names()]
    if missing:
        listed = " ".join(missing)
        pytest.fail(f"model(s) {listed} not installed: run 'python3 install.py --models {listed}' "
                    "or set AI_REMOVE_BACKGROUND_MODELS to a folder holding them")
