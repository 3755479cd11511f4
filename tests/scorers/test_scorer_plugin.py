"""A user's scorer plugs in without editing phf (docs/scorers.md#write-your-own-scorer): the example package
``examples/scorer_plugin/my_scorers`` and its YAML ``examples/scorer_plugin/conf/scorer/pattern.yaml``,
selected through ``hydra.searchpath``, label a tiny corpus and train a tiny model."""

from __future__ import annotations

import json
import random

import pytest
from hydra.utils import instantiate

from tests.conftest import ROOT, TINY, compose

PLUGIN = ROOT / "examples" / "scorer_plugin"
SEARCHPATH = f"hydra.searchpath=[file://{PLUGIN / 'conf'}]"


@pytest.fixture(autouse=True)
def importable(monkeypatch):
    """The user's package must be importable (installed, or on PYTHONPATH)."""
    monkeypatch.syspath_prepend(str(PLUGIN))


def test_the_example_scores_matches_per_character():
    """'mail a@b.io' has 11 characters and one address: 1/11; 'none' has none: 0; an empty text: 0."""
    scorer = instantiate(compose(["scorer=pattern", SEARCHPATH]).scorer)
    assert type(scorer).__module__ == "my_scorers.pattern"
    assert scorer.score(["mail a@b.io", "none", ""]) == [1 / 11, 0.0, 0.0]
    custom = instantiate(compose(["scorer=pattern", SEARCHPATH, "scorer.patterns=[secret]"]).scorer)
    assert custom.score(["a SECRET b"]) == [1 / 10] and custom.key != scorer.key
    with pytest.raises(Exception, match="scorer.patterns"):
        instantiate(compose(["scorer=pattern", SEARCHPATH, "scorer.patterns=['(']"]).scorer)


def _corpus(path, n_docs=120, seed=0):
    """Prose documents of three sentences; every third sentence carries an e-mail address."""
    rng = random.Random(seed)
    words = "the a report meeting office team notes week plan river garden budget".split()
    with open(path, "w") as f:
        for i in range(n_docs):
            sents = [" ".join(rng.choice(words) for _ in range(8)).capitalize() + "." for _ in range(3)]
            if i % 3 == 0:
                sents[1] = f"Write to user{i}@example.com for the notes."
            f.write(json.dumps({"text": " ".join(sents)}) + "\n")
    return path


def test_a_tiny_run_is_labelled_and_trained_by_the_plugin(tmp_path, one_thread):
    from phf.data.pipeline import RunData
    from phf.tokenizer import load_tokenizer
    from phf.train import train

    data = _corpus(tmp_path / "my.jsonl")
    cfg = compose([o for o in TINY if not o.startswith(("data", "task"))] + [
        "task=pii", "scorer=pattern", SEARCHPATH, "data=jsonl", f"data.source.path={data}", "data.val_fraction=0.2",
        "data.shuffle_buffer=0", "data.min_val_tokens=0", "trainer.max_steps=2", "objective=conditional",
        f"run_dir={tmp_path / 'run'}"])
    assert cfg.scorer._target_ == "my_scorers.pattern.PatternScorer"
    docs = RunData.from_config(cfg).stream("train", load_tokenizer(), epochs=1).scored_sample(6)
    flagged = [d.texts[s] for d in docs for s, v in enumerate(d.scores) if v > 0]
    assert flagged and all("@example.com" in t for t in flagged)  # only the sentences with an address
    final = train(cfg)
    assert final["step"] == 2 and (tmp_path / "run" / "final" / "phf_summary.json").is_file()
    stored = (tmp_path / "run" / "config.yaml").read_text()
    assert "my_scorers.pattern.PatternScorer" in stored
