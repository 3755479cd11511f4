"""The offline KL reference: trained once on the clean corpus, cached and reused; KL and the clean
held-out loss are finite at the end of a tiny laptop-like run."""

from __future__ import annotations

import json
import math

import pytest

from phf.data.document import Document
from phf.data.pipeline import in_validation
from phf.eval.reference import CleanSource, reference_config, reference_key
from tests.conftest import TINY, compose

# laptop-like: an injected corpus, the PII task, the final evaluation with the trained reference; tiny sizes
TINY_LAPTOP = [o for o in TINY if not o.startswith(("data=", "data.source."))] + [
    "task=pii", "data=local_pii", "data.source.n_docs=60", "data.source.max_chars=600", "data.val_fraction=0.2",
    "trainer.final_eval=true", "task.eval.kl.train_reference=true", "task.eval.kl.num_samples=4",
    "task.eval.kl.max_new_tokens=8", "task.eval.kl.batch_size=4", "task.eval.capability.clean_window_tokens=24",
    "task.eval.capability.resamples=100", "task.eval.batch_size=4",
    "task.eval.scenarios={unconditional: {num_samples: 4, max_new_tokens: 8}}",
]


@pytest.mark.slow  # ~45 s on a busy 2-core machine (two tiny runs, a reference, presidio)
def test_kl_and_clean_heldout_loss_are_finite_and_the_reference_is_trained_once(tmp_path, one_thread):
    from phf.train import train

    cache = tmp_path / "cache"
    metrics = {}
    for objective in ("mle", "conditional"):
        cfg = compose(TINY_LAPTOP + [f"objective={objective}", f"run_dir={tmp_path / objective}",
                                     f"cache_dir={cache}"])
        metrics[objective] = train(cfg)
        if objective == "mle":
            refs = list((cache / "reference").glob("pii-*/reference.json"))
            assert len(refs) == 1
            built = refs[0].stat().st_mtime_ns
    assert refs[0].stat().st_mtime_ns == built  # the conditional run reused the MLE run's reference
    assert len(list((cache / "reference").glob("pii-*"))) == 1
    info = json.loads(refs[0].read_text())
    assert info["clean"] is True and info["steps"] == 3  # the run's steps
    for objective, m in metrics.items():
        assert math.isfinite(m["eval/kl"]) and math.isfinite(m["eval/heldout_clean/loss"])
        assert m["eval/heldout_clean/num_docs"] > 0
        per_document = (tmp_path / objective / "heldout_clean" / "step_00000003.jsonl").read_text().splitlines()
        assert len(per_document) == m["eval/heldout_clean/num_docs"]
    # the same clean tokens for both objectives
    assert metrics["mle"]["eval/heldout_clean/num_tokens"] == metrics["conditional"]["eval/heldout_clean/num_tokens"]


def test_reference_config_is_mle_without_evaluation_and_keyed_by_what_changes_its_weights():
    cfg = compose(TINY_LAPTOP + ["objective=conditional", "run_dir=x", "seed=5"])
    ref = reference_config(cfg, None, 0, clean=True)
    assert ref.objective._target_ == "phf.objectives.MLE" and ref.seed == 0
    assert ref.trainer.max_steps == 3 and not ref.trainer.final_eval and ref.trainer.resume == "never"
    assert ref.data.source._target_ == "phf.eval.reference.CleanSource"
    assert ref.data.source.injected._target_ == cfg.data.source._target_
    bpe = reference_config(compose(TINY_LAPTOP + ["tokenizer=bpe", "run_dir=x"]), None, 0, clean=True)
    assert bpe.tokenizer.source._target_ == cfg.data.source._target_  # the runs' tokenizer, fitted to their corpus
    # neither the run's objective nor its seed changes the reference; its steps and its corpus do
    other = reference_config(compose(TINY_LAPTOP + ["objective=mle", "run_dir=y", "seed=6"]), None, 0, clean=True)
    assert reference_key(ref) == reference_key(other)
    assert reference_key(reference_config(cfg, 7, 0, clean=True)) != reference_key(ref)
    assert reference_key(reference_config(cfg, None, 0, clean=False)) != reference_key(ref)


@pytest.mark.filterwarnings("ignore:'phf.eval.reference' found in sys.modules:RuntimeWarning")  # runpy, imported here
def test_reference_config_names_the_clean_source_by_its_import_path_when_run_as_a_script():
    """``python -m phf.eval.reference`` (prebuilding a reference) runs the module under another ``__name__``:
    the reference's source must still be ``phf.eval.reference.CleanSource``, importable by the training
    process, with the same cache key as the reference a run would train."""
    import runpy

    script = runpy.run_module("phf.eval.reference", run_name="reference_as_a_script")  # not __main__: no main()
    cfg = compose(TINY_LAPTOP + ["objective=mle", "run_dir=x"])
    ref = script["reference_config"](cfg, None, 0, clean=True)
    assert ref.data.source._target_ == "phf.eval.reference.CleanSource"
    assert reference_key(ref) == reference_key(reference_config(cfg, None, 0, clean=True))


class _Injected:
    def __init__(self, injected, clean):
        self.injected, self.clean = injected, clean

    def clean_documents(self):
        return self.clean

    def iter_from(self, start):
        yield from self.injected[start:]


def test_clean_source_hides_the_held_out_documents_and_keeps_positions():
    clean = [Document([f"clean {i}."], None, id=f"c{i}") for i in range(30)]
    injected = [Document([f"clean {i}. Call 555-0100."], None, id=f"i{i}") for i in range(30)]
    src = CleanSource(_Injected(injected, clean), 0.3)
    got = list(src.iter_from(0))
    assert len(got) == 30 and len(src) == 30
    for i, d in enumerate(got):
        assert d.texts == ([] if in_validation(injected[i], 0.3) else [f"clean {i}."])
    assert any(not d.texts for d in got) and any(d.texts for d in got)
    assert [d.id for d in src.iter_from(28)] == [got[28].id, got[29].id]
