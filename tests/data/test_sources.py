import json

import pytest

from phf.data.sources import HFSource, JsonlSource, LocalPythonSource


def write(tmp_path, lines, name="d.jsonl", mode="w"):
    p = tmp_path / name
    if mode == "wb":
        p.write_bytes(lines)
    else:
        p.write_text("\n".join(lines) + "\n")
    return str(p)


def test_jsonl_reads_both_formats(tmp_path):
    p = write(tmp_path, [json.dumps({"texts": ["a. ", "b."], "scores": [0.1, 0.2], "avg_score": 0.15}),
                         json.dumps({"text": "raw text"})])
    a, b = list(JsonlSource(p))
    assert a.texts == ["a. ", "b."] and a.scores == [0.1, 0.2] and a.avg_score == pytest.approx(0.15)
    assert b.texts == ["raw text"] and b.scores is None
    assert [d.texts for d in JsonlSource(p).iter_from(1)] == [["raw text"]]


@pytest.mark.parametrize("line, message", [
    ('{"texts": ["a"]', "d.jsonl:1: malformed JSON"),
    ('{"foo": 1}', "d.jsonl:1: record has neither 'texts'"),
    ('{"texts": ["a", "b"], "scores": [0.1]}', "2 segments but 'scores' has 1"),
    ('{"texts": ["a"], "scores": [NaN]}', r"scores\[0\] = nan is not a finite number"),
    ('{"texts": ["a"], "scores": ["high"]}', r"scores\[0\] = 'high' is not a finite number"),
    ('{"texts": ["a", 3], "scores": [0, 0]}', "'texts' must be a list of strings"),
    ('{"texts": [], "scores": []}', "empty document"),
    ('{"text": ""}', "empty document"),
    ('[1, 2]', "expected a JSON object"),
])
def test_jsonl_bad_records_name_file_and_line(tmp_path, line, message):
    p = write(tmp_path, [line])
    with pytest.raises(ValueError, match=message):
        list(JsonlSource(p))


def test_jsonl_encoding_edge_cases(tmp_path):
    p = write(tmp_path, b'\xef\xbb\xbf{"text": "bom ok\\r\\n"}\n{"text": "bad \xff"}\n', mode="wb")
    it = iter(JsonlSource(p))
    assert next(it).texts == ["bom ok\r\n"]
    with pytest.raises(ValueError, match=r"d.jsonl:2: invalid UTF-8"):
        next(it)
    with pytest.raises(FileNotFoundError, match="JSONL data file not found"):
        JsonlSource(str(tmp_path / "missing.jsonl"))


def test_hf_source_reads_local_jsonl_through_datasets(tmp_path):
    p = write(tmp_path, [json.dumps({"texts": ["x\n"], "scores": [0.0]}), json.dumps({"text": "y\n"})])
    docs = list(HFSource("json", data_files=p))
    assert [d.texts for d in docs] == [["x\n"], ["y\n"]] and docs[0].id == "json[0]"
    assert [d.texts for d in HFSource("json", data_files=p).iter_from(1)] == [["y\n"]]


def test_hf_source_unreachable_offline_fails_fast_with_name():
    with pytest.raises(RuntimeError, match="cannot load Hugging Face dataset 'no-such-user/no-such-dataset'"):
        next(iter(HFSource("no-such-user/no-such-dataset")))


def test_local_python_source_is_deterministic_and_skips_bad_files(tmp_path):
    (tmp_path / "b.py").write_text("x = 1\n")
    (tmp_path / "a.py").write_text("\ufeffy = 2\n")
    (tmp_path / "c.py").write_bytes(b"\x00\x01binary")
    (tmp_path / "site-packages").mkdir()
    (tmp_path / "site-packages" / "z.py").write_text("z = 3\n")
    src = LocalPythonSource(root=str(tmp_path))
    docs = [d for d in src if d.texts]
    assert [d.texts for d in docs] == [["y = 2\n"], ["x = 1\n"]]  # sorted, BOM removed, site-packages excluded
    assert list(src.skipped) == [str(tmp_path / "c.py")]
    with pytest.raises(ValueError, match="c.py: unreadable Python source"):
        list(LocalPythonSource(root=str(tmp_path), on_bad_file="raise"))
    assert len(LocalPythonSource()) > 500  # the real standard library
