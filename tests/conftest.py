"""Shared fixtures: paths of the checkout and the prepared editor chroot."""

from __future__ import annotations

from pathlib import Path

import pytest

CHECKOUT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def editor_host():
    """The cached editor chroot with the engine installed inside it (see tests/editors/host.py)."""
    from editors.host import prepare_host

    return prepare_host()
