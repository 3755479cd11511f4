"""One intra-op thread for the guidance tests: these tiny models are dominated by thread hand-off,
and on an oversubscribed CPU two threads make them 10× slower. The previous setting is restored."""

import pytest


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield
