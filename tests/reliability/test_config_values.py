"""Run settings whose value is wrong (not a number, out of range) are refused naming the key.
"""

from __future__ import annotations

import pytest

from phf.train import train
from tests.conftest import TINY, compose


# -- values that name no key, or were accepted ------------------------------------------------------------
@pytest.mark.parametrize("override, message", [
    ("seed=abc", r"seed must be an integer, got 'abc'"),
    ("seed=1.5", r"seed must be an integer, got 1.5"),
    (f"seed={2**64}", r"seed must be in \[-2\*\*63, 2\*\*64\) \(torch's seed range\), got 18446744073709551616"),
    ("trainer.eps=abc", r"trainer.eps must be a positive number, got 'abc'"),
    ("trainer.betas=[0.9]", r"trainer.betas must be two numbers in \[0, 1\), e.g. \[0.9, 0.999\], got \[0.9\]"),
    ("model.n_layer=0", r"model.n_layer must be a positive integer, got 0"),
])
def test_bad_run_value_names_the_key(tmp_path, override, message):
    with pytest.raises(Exception, match=message) as e:  # model.*: Hydra's InstantiationException around it
        train(compose(TINY + [override, f"run_dir={tmp_path / 'run'}"]))
    assert isinstance(e.value, ValueError) or isinstance(e.value.__cause__, ValueError)
