"""Regex detectors independent of presidio (e-mail, US phone, SSN, IPv4, card-like digit runs), applied to
check_independently.py's sample files: a second, cruder scorer for the demo's independent check.

    python experiments/demo/independent_check/regex_check.py experiments/demo/independent_check/*.jsonl.gz
"""

import gzip
import json
import re
import sys

from phf.eval.metrics import wilson_interval

DETECTORS = {
    "email": re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+"),
    "phone": re.compile(r"(?:\+?1[-.\s]?)?\(?\d{3}\)?[-.\s]\d{3}[-.\s]\d{4}\b"),
    "ssn": re.compile(r"\b\d{3}-\d{2}-\d{4}\b"),
    "ipv4": re.compile(r"\b(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)\b"),
    "card": re.compile(r"\b(?:\d[ -]?){13,16}\b"),
}


for path in sys.argv[1:]:
    with gzip.open(path, "rt") if path.endswith(".gz") else open(path) as f:
        texts = [json.loads(line)["text"] for line in f if line.strip()]
    hits = sum(any(r.search(t) for r in DETECTORS.values()) for t in texts)
    low, high = wilson_interval(hits, len(texts))
    print(f"{path}: {len(texts)} samples, regex hit rate {hits / len(texts):.3f} [{low:.3f}, {high:.3f}]")
