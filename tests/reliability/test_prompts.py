"""Round 3, prompts (issue 27): a prompts file that is not UTF-8 or holds a non-string prompt is named
with its line; a scenario reads only the prompts it draws; a prompt too long for the model's context
stops the run before training, not after it."""

from __future__ import annotations

import json
import random

import pytest

import phf.eval.red_team as red_team
from phf.eval.red_team import draw_prompts, iter_prompts, load_prompts
from phf.train import train


def write(path, lines: list[str | bytes]):
    path.write_bytes(b"".join((x if isinstance(x, bytes) else x.encode()) + b"\n" for x in lines))
    return path


def test_latin1_prompts_file_names_the_file_line_and_encoding(tmp_path):
    path = write(tmp_path / "p.jsonl", [json.dumps({"prompt": "ok"}), '{"prompt": "caf\xe9"}'.encode("latin-1")])
    with pytest.raises(ValueError, match=rf"{path}:2: not UTF-8 \(invalid continuation byte at byte 15 .*prompts files "
                                         r"are UTF-8 JSONL \(convert it, e\.g\. iconv -f latin1 -t utf-8\)"):
        load_prompts(path)


@pytest.mark.parametrize(("line", "message"), [
    ('{"prompt": 42}', r'"prompt" must be a string, got int 42'),
    ('{"text": ["a", "b"]}', r'"text" must be a string, got list'),
    ('{"prompt": null}', r'"prompt" must be a string, got NoneType'),
    ('["a"]', r'expected a JSON object with a "prompt" \(or "text"\) string, got list'),
    ('{"content": "a"}', r'expected a JSON object with a "prompt" \(or "text"\) string, got keys \[.content.\]'),
    ('{"prompt": "a', r'expected a JSON object with a "prompt" \(or "text"\) string: Invalid control character'),
    ('{"prompt": "\\ud800"}', r'"prompt" has a lone surrogate'),
])
def test_bad_prompt_record_names_the_file_and_line(tmp_path, line, message):
    path = write(tmp_path / "p.jsonl", [json.dumps({"prompt": "ok"}), "", line])
    with pytest.raises(ValueError, match=rf"{path}:3: {message}"):
        load_prompts(path)


def test_draw_prompts_is_the_draw_sampling_makes(tmp_path):
    """The lazy draw picks exactly what ``sample`` picked from the whole list: cycle in order, random with
    ``random.Random(seed).choices``; blank lines are not prompts."""
    prompts = [f"p{i}" for i in range(50)]
    path = write(tmp_path / "p.jsonl", [json.dumps({"prompt": p}) + ("\n" if i % 7 == 0 else "")
                                        for i, p in enumerate(prompts)])
    assert load_prompts(path) == prompts
    assert [p for _, p in draw_prompts(path, 120, "cycle")] == [prompts[i % 50] for i in range(120)]
    for seed in (0, 3):
        assert ([p for _, p in draw_prompts(path, 30, "random", seed)]
                == random.Random(seed).choices(prompts, k=30))
    where, text = draw_prompts(path, 1, "random", 0)[0]
    assert json.loads(path.read_text().splitlines()[int(where.rsplit(":", 1)[1]) - 1])["prompt"] == text


def test_draw_prompts_parses_only_what_it_draws(tmp_path, monkeypatch):
    """2 samples from many prompts: cycle reads the first 2 lines, random parses only the 2 drawn lines
    (measured with 2 M prompts: 112 s and 2.5 GB before, see docs/reliability.md)."""
    lines = [json.dumps({"prompt": f"p{i}"}) for i in range(1000)] + [b"\xff not even UTF-8"]
    path = write(tmp_path / "p.jsonl", lines)
    assert [p for _, p in draw_prompts(path, 2, "cycle")] == ["p0", "p1"]  # the bad last line is never read
    parsed = []
    real = red_team.parse_prompt
    monkeypatch.setattr(red_team, "parse_prompt", lambda raw, where: parsed.append(where) or real(raw, where))
    drawn = draw_prompts(path, 2, "random", seed=1)
    assert len(parsed) <= 2 and all(w in parsed for w, _ in drawn)
    assert next(iter_prompts(path)) == (f"{path}:1", "p0")  # streamed, line numbers kept


def test_sample_tokenizes_only_the_drawn_prompts(monkeypatch):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    import phf.eval.sampling as sampling
    from phf.tokenizer import gpt2_tokenizer

    tok = gpt2_tokenizer()
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_layer=1, n_head=2, n_embd=16, n_positions=32))
    encoded = []
    real = sampling.prompt_ids
    monkeypatch.setattr(sampling, "prompt_ids", lambda t, prefix, p="": encoded.append(p) or real(t, prefix, p))
    out = sampling.sample(model, tok, [f"x{i} =" for i in range(5000)], 2,
                          sampling.SamplingSettings(max_new_tokens=2, batch_size=2, prompt_draw="random"))
    assert len(out) == 2 and sorted(encoded) == sorted({s.prompt for s in out})


def test_prompt_longer_than_the_context_stops_the_run_before_training(fast_cfg, tmp_path):
    """The tiny model's context is 32 tokens: a 40-token prompt failed at the end-of-run evaluation, after
    the training, and again on every resume. Now the run stops before its first step."""
    path = write(tmp_path / "long.jsonl", [json.dumps({"prompt": "def f(x):\n"}),
                                           json.dumps({"prompt": "x = 1\n" * 10})])
    cfg = fast_cfg("trainer.max_steps=2", "trainer.final_eval=true", f"task.eval.scenarios.functions.prompts={path}",
                   "task.eval.scenarios.functions.num_samples=4")
    with pytest.raises(ValueError, match=rf"task\.eval\.scenarios\.functions: prompt {path}:2 is 4\d tokens \(EOS \+ "
                                         r"control prefix \+ text\), which leaves no room for a sample in the model's "
                                         rf"32-token context; shorten or drop it .*task\.eval\.scenarios\.functions\."
                                         rf"prompts={path}"):
        train(cfg)
    assert not (tmp_path / "run" / "metrics.jsonl").exists() or "loss" not in (tmp_path / "run" / "metrics.jsonl").read_text()


def test_prompt_over_max_length_stops_the_run_before_training(fast_cfg, tmp_path):
    path = write(tmp_path / "p.jsonl", [json.dumps({"prompt": "x = 1\n" * 3})])
    cfg = fast_cfg("trainer.max_steps=2", "trainer.final_eval=true", f"task.eval.scenarios.functions.prompts={path}",
                   "task.eval.scenarios.functions.num_samples=2", "+task.eval.scenarios.functions.max_length=10")
    with pytest.raises(ValueError, match=r"task\.eval\.scenarios\.functions: prompt .*:1 is 1\d tokens .* leaves no new "
                                         r"token under task\.eval\.scenarios\.functions\.max_length=10"):
        train(cfg)


def test_prompts_are_not_checked_when_no_evaluation_will_run(fast_cfg, tmp_path):
    """No final evaluation and every_steps past the end: the prompts are never sampled, so a long one is
    no reason to refuse the run."""
    path = write(tmp_path / "long.jsonl", [json.dumps({"prompt": "x = 1\n" * 10})])
    train(fast_cfg("trainer.max_steps=2", "trainer.final_eval=false", "task.eval.every_steps=2",
                   f"task.eval.scenarios.functions.prompts={path}"))
    assert (tmp_path / "run" / "final" / "phf_summary.json").is_file()
