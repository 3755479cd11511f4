"""Shared pieces of the guidance_pep8 scripts: the held-out PEP8 documents used for localisation."""

from __future__ import annotations

from phf.data.pipeline import RunData
from phf.entry import compose


def scored_docs(split: str, n: int):
    """The first ``n`` scored documents of ``split`` of the runs' data (``+experiment=guidance_pep8``: the
    standard library, each line scored by pycodestyle), as training reads them."""
    from phf.tokenizer import gpt2_tokenizer

    run_data = RunData.from_config(compose(["+experiment=guidance_pep8", "run_dir=unused"]))
    return run_data.stream(split, gpt2_tokenizer()).scored_sample(n)
