"""No silent task (issue 28, item 1): the data config names the task its text is for; with your own data
(data=jsonl / data=hf) the command line must, and a task whose scorer cannot mean anything on the text
(pycodestyle on prose) stops the run."""

from __future__ import annotations

import json

import pytest
from hydra.errors import ConfigCompositionException

from tests.conftest import TINY, compose

PROSE = ["Please write to jane.doe@example.com about the meeting.", "The weather was fine, so we walked home.",
         "Our office moved to the second floor last spring."]
CODE = ["def f(x):\n    return x + 1\n", "import os\n\nprint(os.sep)\n", "x = [1, 2, 3]\n"]


@pytest.mark.parametrize("data, extra", [("jsonl", "data.source.path=my.jsonl"), ("hf", "data.source.names=[json]")])
def test_own_data_without_a_task_names_the_choices(data, extra):
    with pytest.raises(ConfigCompositionException, match=r"(?s)You must specify 'task'.*pep8.*pii.*toxicity"):
        compose([f"data={data}", extra])
    assert compose([f"data={data}", extra, "task=pii"]).task.name == "pii"


@pytest.mark.parametrize("data, task", [("local_pep8", "pep8"), ("local_pii", "pii"), ("local_toxicity", "toxicity")])
def test_a_local_corpus_names_its_task_and_the_command_line_wins(data, task):
    assert compose([f"data={data}"]).task.name == task
    assert compose([f"data={data}", "task=toxicity_profanity"]).task.name == "toxicity_profanity"
    assert compose([]).task.name == "pep8"  # the default data (local_pep8) is Python code


def test_pep8_misfit_counts_documents_that_parse():
    """3 prose sentences: 0 of 3 parse as Python, below min_python_share 0.5 -> a reason; 3 snippets of
    code: 3 of 3 parse -> None; min_python_share=0 never objects."""
    from phf.scorers.pep8 import PEP8Scorer

    assert "0 of the first 3 documents parse as Python" in PEP8Scorer().misfit(PROSE)
    assert PEP8Scorer().misfit(CODE) is None
    assert PEP8Scorer().misfit(CODE[:1] + PROSE[:1]) is None  # 1 of 2 = 0.5: enough
    assert PEP8Scorer(min_python_share=0).misfit(PROSE) is None
    with pytest.raises(ValueError, match="min_python_share"):
        PEP8Scorer(min_python_share=2)


def _jsonl(path, texts):
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts * 10))
    return path


def test_pep8_on_prose_stops_the_stream_naming_the_tasks(tmp_path):
    from phf.data.pipeline import RunData
    from phf.tokenizer import load_tokenizer

    base = [o for o in TINY if not o.startswith("data")] + ["data=jsonl", "data.val_fraction=0.01"]
    tokenizer = load_tokenizer()
    cfg = compose(base + [f"data.source.path={_jsonl(tmp_path / 'prose.jsonl', PROSE)}"])
    with pytest.raises(ValueError, match=r"scorer 'pep8' does not fit this data .*prose\.jsonl:1.*task=NAME "
                                         r"\(one of: pep8, pii, toxicity, toxicity_profanity"):
        next(iter(RunData.from_config(cfg).stream("train", tokenizer)))
    cfg = compose(base + [f"data.source.path={_jsonl(tmp_path / 'code.jsonl', CODE)}"])
    assert next(iter(RunData.from_config(cfg).stream("train", tokenizer)))["input_ids"].numel() == cfg.model.block_size
