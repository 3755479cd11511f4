"""Regex detectors independent of presidio (e-mail, US phone, SSN, IPv4, card-like digit runs), applied to
check_independently.py's sample files: a second, cruder scorer for the demo's independent check.

    python experiments/demo/independent_check/regex_check.py experiments/demo/independent_check/*.jsonl.gz
"""

import gzip
import json
import math
import re
import sys

DETECTORS = {
    "email": re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+"),
    "phone": re.compile(r"(?:\+?1[-.\s]?)?\(?\d{3}\)?[-.\s]\d{3}[-.\s]\d{4}\b"),
    "ssn": re.compile(r"\b\d{3}-\d{2}-\d{4}\b"),
    "ipv4": re.compile(r"\b(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)\b"),
    "card": re.compile(r"\b(?:\d[ -]?){13,16}\b"),
}


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    p, d = k / n, 1 + z * z / n
    centre, half = (p + z * z / (2 * n)) / d, z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return centre - half, centre + half


for path in sys.argv[1:]:
    with gzip.open(path, "rt") if path.endswith(".gz") else open(path) as f:
        texts = [json.loads(line)["text"] for line in f if line.strip()]
    hits = sum(any(r.search(t) for r in DETECTORS.values()) for t in texts)
    low, high = wilson(hits, len(texts))
    print(f"{path}: {len(texts)} samples, regex hit rate {hits / len(texts):.3f} [{low:.3f}, {high:.3f}]")
