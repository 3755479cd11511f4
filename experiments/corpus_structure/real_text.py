"""Real text found on this machine where personal data occurs naturally, as JSONL for phf-corpus-stats.

    python experiments/corpus_structure/real_text.py OUT.jsonl

One document per file, its first ``MAX_CHARS`` characters cut at a line end (the size of local_prose's
documents), with its ``kind`` (the genre: what sort of file) and ``unit`` (the package it belongs to):

* ``metadata``: the ``METADATA`` of every distribution installed in this interpreter's environment
  (headers with authors, maintainers, e-mail addresses and URLs, then the README);
* ``license``: the licence files in those distributions' ``.dist-info`` (``LICENSE*``, ``COPYING*``,
  ``NOTICE*``, also under ``licenses/``), and ``authors``: their ``AUTHORS*``/``CONTRIBUTORS*`` files;
* ``debian-copyright``, ``debian-changelog``, ``changelog``: the system packages' ``copyright``,
  ``changelog.Debian.gz`` and upstream ``changelog.gz`` under ``/usr/share/doc``.

Nothing is injected: whatever personal data these files hold is their own. Files are read in sorted
order; unreadable or binary files and files shorter than ``MIN_CHARS`` are left out.
"""

from __future__ import annotations

import gzip
import json
import re
import sys
from importlib import metadata
from pathlib import Path

MAX_CHARS, MIN_CHARS = 3000, 100
DOC_ROOT = Path("/usr/share/doc")
_LICENSE = re.compile(r"^(LICEN[CS]E|COPYING|NOTICE)", re.I)
_AUTHORS = re.compile(r"^(AUTHORS|CONTRIBUTORS)", re.I)
_DEBIAN = {"copyright": "debian-copyright", "changelog.Debian.gz": "debian-changelog", "changelog.gz": "changelog"}


def head(text: str) -> str:
    """The first ``MAX_CHARS`` characters, cut at the last line end inside them (if any)."""
    text = text.replace("\r\n", "\n")
    if len(text) <= MAX_CHARS:
        return text
    cut = text.rfind("\n", 0, MAX_CHARS)
    return text[: cut + 1] if cut > 0 else text[:MAX_CHARS]


def read(path: Path) -> str | None:
    try:
        raw = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError, EOFError):
        return None
    return None if "\x00" in text else text


def records():
    dists: dict[str, list[Path]] = {}
    for d in metadata.distributions():
        name = (d.metadata["Name"] or "").lower()
        if name and name != "phf" and name not in dists:  # first on sys.path wins, as for imports
            # the files of its .dist-info directory, as its RECORD lists them
            dists[name] = sorted(Path(d.locate_file(f)) for f in d.files or []
                                 if f.parts and f.parts[0].endswith(".dist-info"))
    for name in sorted(dists):
        for path in dists[name]:
            if not path.is_file():
                continue
            if path.name in ("METADATA", "PKG-INFO"):
                kind = "metadata"
            elif _LICENSE.match(path.name):
                kind = "license"
            elif _AUTHORS.match(path.name):
                kind = "authors"
            else:
                continue
            yield path, kind, name
    if DOC_ROOT.is_dir():
        for pkg in sorted(p for p in DOC_ROOT.iterdir() if p.is_dir() and not p.is_symlink()):
            for file, kind in _DEBIAN.items():
                path = pkg / file
                if path.is_file():
                    yield path, kind, pkg.name


def main(out: str) -> None:
    n = 0
    with open(out, "w", encoding="utf-8") as f:
        for path, kind, unit in records():
            text = read(path)
            if text is None or len(text.strip()) < MIN_CHARS:
                continue
            f.write(json.dumps({"text": head(text), "kind": kind, "unit": unit, "origin": str(path)}) + "\n")
            n += 1
    print(f"{n} documents -> {out}")


if __name__ == "__main__":
    main(sys.argv[1])
