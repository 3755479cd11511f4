"""Fixtures of the SPA tests: one torch thread (tiny models on a shared 2-core machine)."""

import pytest


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield
