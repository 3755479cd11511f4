"""A damaged or unusable score cache names the file and the way out.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest


# -- a damaged or unusable score cache ----------------------------------------------------------------------
def test_damaged_score_cache_names_the_file_and_the_way_out(tmp_path):
    from phf.scorers.cache import CACHE_FILE, ScoreCache, ScoreCacheError, text_hash

    garbage = tmp_path / "garbage" / CACHE_FILE
    garbage.parent.mkdir()
    garbage.write_bytes(b"this is not an sqlite file" * 100)
    with pytest.raises(ScoreCacheError, match=rf"score cache {re.escape(str(garbage))}: DatabaseError: .*"
                                              r"delete it .*cache_dir=null"):
        ScoreCache(garbage)
    good = ScoreCache(tmp_path / "t" / CACHE_FILE)
    good.put_many("k", [(text_hash(str(i) * 50), [0.5]) for i in range(3000)])
    good.close()
    f = tmp_path / "t" / CACHE_FILE
    for extra in ("-wal", "-shm"):
        Path(str(f) + extra).unlink(missing_ok=True)
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 3])  # truncated
    with pytest.raises(ScoreCacheError, match=rf"score cache {re.escape(str(f))}: .*malformed.*delete it"):
        ScoreCache(f).get_many("k", [text_hash(str(i) * 50) for i in range(3000)])
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(ScoreCacheError, match=rf"score cache {re.escape(str(blocker))}/c/{CACHE_FILE}: .*cannot open "
                                              r"or write it.*cache_dir=null"):
        ScoreCache(blocker / "c" / CACHE_FILE)
