"""phf-report over a sweep with one damaged run: the run is named, marked and skipped; the rest is reported.
"""

from __future__ import annotations

import shutil

import pytest


# -- phf-report over a sweep with one damaged run ----------------------------------------------------------------------------
@pytest.mark.parametrize("file, content", [
    ("eval.json", b'{"scenarios": {"unconditional": {"score": 0.1'),
    ("metrics.jsonl", b'{"step": 1, "loss": 2.0}\n\xff\xfe\x00garbage\n{"step": 2, "loss": 1.9}\n'),
    ("metrics.jsonl", b'{"step": 1}\n[1, 2]\n{"step": 2}\n'),
    ("config.yaml", b"task: [unclosed\n  - : :\n"),
], ids=["eval.json truncated", "metrics.jsonl garbage", "metrics.jsonl non-object row", "config.yaml garbage"])
def test_report_marks_and_skips_one_damaged_run(tmp_path, checkpoint, capsys, file, content):
    from phf.report import build_report

    sweep = tmp_path / "sweep"
    for name in ("0-mle", "1-filtering"):
        shutil.copytree(checkpoint.parent.parent, sweep / name, ignore=shutil.ignore_patterns("checkpoints", "final"))
    (sweep / "1-filtering" / file).write_bytes(content)
    out = build_report([sweep], sweep)
    status = {r["run"]: r["status"] for r in out["table"]}
    assert not status["0-mle"].startswith("skipped")
    assert status["1-filtering"].startswith(f"skipped, damaged: {sweep / '1-filtering' / file}")
    assert f"skipping run {sweep / '1-filtering'}: damaged file {sweep / '1-filtering' / file}" in capsys.readouterr().err
    assert "skipped, damaged" in (sweep / "report.md").read_text()
