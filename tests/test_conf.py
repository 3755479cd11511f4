"""Every config file composes into the root config and its `_target_` instantiates."""

import json

import pytest
from hydra.utils import instantiate

from tests.conftest import CONF, compose

GROUPS = ["model", "data", "logger", "scorer", "task", "trainer", "objective", "reward", "tokenizer"]
FILES = [(g, p.stem) for g in GROUPS for p in sorted((CONF / g).glob("*.yaml"))]


def test_every_group_has_configs():
    assert {g for g, _ in FILES} == set(GROUPS)


@pytest.mark.parametrize("group, name", FILES, ids=[f"{g}/{n}" for g, n in FILES])
def test_config_composes_and_instantiates(group, name, tmp_path):
    from phf.tokenizer import add_special_tokens, gpt2_tokenizer

    extra = []
    if group == "data":
        path = tmp_path / "d.jsonl"
        path.write_text(json.dumps({"text": "x = 1\n"}) + "\n")
        # your own data names its task (docs/data.md#which-task)
        extra = {"jsonl": [f"data.source.path={path}", "task=pep8"],
                 "hf": ["data.source.names=[json]", f"data.source.data_files={path}", "task=pep8"]}.get(name, [])
    cfg = compose([f"{group}={name}", f"run_dir={tmp_path}", f"cache_dir={tmp_path / 'cache'}", *extra])
    node = cfg[group]
    if group == "trainer":
        from phf.trainer import Trainer

        trainer = instantiate(node)
        assert isinstance(trainer, Trainer) and trainer.plan(32, 1).tokens_per_step == 32 * node.effective_batch_size
    elif group == "task":
        from phf.eval.settings import Evaluation

        assert node.name == name and instantiate(node.segmenter)("a\nb") and cfg.scorer._target_
        assert isinstance(instantiate(node.eval), Evaluation)
    elif group == "model":
        tok = gpt2_tokenizer()
        objective = instantiate(cfg.objective)
        add_special_tokens(tok, objective.special_tokens)
        model = instantiate(node, tokenizer=tok, objective=objective)
        assert model.config.n_positions == node.block_size
    elif group == "data":
        from phf.data.pipeline import Data

        data = instantiate(node)
        assert isinstance(data, Data) and hasattr(data.source, "iter_from")
    elif group == "logger":
        tracker = instantiate(node, _partial_=True)(run_dir=tmp_path / "run", run_config={}, name="t")
        tracker.log({"loss": 1.0}, step=1)
        tracker.finish()
        assert (tmp_path / "run" / "metrics.jsonl").read_text().count("\n") == 1
    elif group == "scorer":
        if name == "detoxify":
            pytest.skip("needs a local checkpoint file: covered by tests/scorers/test_detoxify.py")
        scores = instantiate(node).score(["hello world\n"])
        assert len(scores) == 1 and scores[0] >= 0
    elif group == "objective":  # a token objective (phf-train) or a preference one (phf-spa)
        from phf.objectives import Objective, PreferenceObjective

        obj = instantiate(node)
        assert callable(obj.loss) if isinstance(obj, Objective) else callable(obj.preference_loss)
        assert isinstance(obj, Objective | PreferenceObjective)
    elif group == "reward":
        reward = instantiate(node, tokenizer=gpt2_tokenizer())
        assert callable(reward.token_scores) and callable(reward.maybe_refit)
    elif group == "tokenizer":
        if name == "pretrained":  # name_or_path is mandatory: a local directory works offline
            gpt2_tokenizer().save_pretrained(tmp_path / "tok")
            node.name_or_path = str(tmp_path / "tok")
        if name == "bpe":  # fitted on 30 stdlib files, to keep the test fast
            node.source.max_files, node.vocab_size = 30, 600
        tok = instantiate(node)
        assert tok.eos_token_id is not None and tok.decode(tok.encode("def f():\n    pass\n")) == "def f():\n    pass\n"


def test_unknown_group_option_lists_valid_ones(tmp_path):
    with pytest.raises(Exception, match=r"(?s)objective.*mle"):
        compose(["objective=does_not_exist", f"run_dir={tmp_path}"])
