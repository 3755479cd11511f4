"""The run directory: every file name of a run's layout, once, with the readers and writers of its files.

phf-train, phf-spa, phf-eval, phf-report and the experiments' collectors find a run's files through this
module and nowhere else. The layout (``RUN`` = ``run_dir``)::

    RUN/config.yaml                   CONFIG: the resolved config (phf-train, phf-spa); its presence makes RUN a run
    RUN/config.step_N.yaml            the previous config.yaml, kept when a resume or a new run changed it
    RUN/metrics.jsonl                 METRICS: one JSON object per tracker row (``step``, ``tokens_seen``, ...)
    RUN/metrics.rejected.jsonl        lines of metrics.jsonl a resume could not read, kept as they were
    RUN/eval.json                     EVAL: phf-eval's result (written last)
    RUN/red_team.json                 RED_TEAM: phf-eval's adaptive red-team rounds
    RUN/samples/step_N/<scenario>.jsonl   SAMPLES: an evaluation's samples with their scores (in training)
    RUN/samples/<scenario>.jsonl      the same, from phf-eval (no step)
    RUN/heldout_clean/step_N.jsonl    HELDOUT_CLEAN: per-document clean held-out losses (``eval.jsonl``: phf-eval)
    RUN/checkpoints/step_N/           CHECKPOINTS: resumable checkpoints (``phf.checkpoint`` owns what is inside)
    RUN/final/                        FINAL: the finished model (an HF directory), ``final/phf_summary.json`` last
    RUN/final.step_N/                 a finished final/ a later run replaced, kept
    RUN/error.txt                     ERROR: the traceback of a failed sweep job
    RUN/.hydra/overrides.yaml         OVERRIDES: the job's command-line overrides (Hydra's record)

phf-spa writes the same layout (``samples/step_N/`` at the global DPO step, ``final/`` = the last stage's
policy with its ``phf_summary.json``), plus per stage ``RUN/<stage>/`` (``pairs.jsonl``, ``pairs_stats.json``,
``checkpoints/``, ``final/``) and ``RUN/spa_summary.json``. SPA runs written before that layout (samples
under ``RUN/init/`` and ``RUN/<stage>/``, no ``final/``, no ``tokens_seen``) are moved to it once by
``migrate_legacy_spa`` (``python -m phf.spa.migrate RUN``); no reader knows the old layout.

Step folders and files are named ``step_`` + the step with eight digits (``step_name``: ``step_00001500``);
readers take any width (``parse_step``), so runs written with the seven-digit sample folders of earlier
versions (``samples/step_0001500``) read the same.

Non-finite numbers: JSON has none, so writers put ``null`` where a value is NaN or ±inf (``finite``).
Readers take a number with ``number``: ``null`` is NaN, and the encodings earlier versions wrote are read
as what they meant (the strings ``"nan"``, ``"inf"``, ``"-inf"`` of the tracker and phf-spa, the bare
``NaN``/``Infinity`` tokens of Python's ``json``), so old runs report the same numbers.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
from collections.abc import Iterable
from pathlib import Path

CONFIG = "config.yaml"
METRICS = "metrics.jsonl"
REJECTED_METRICS = "metrics.rejected.jsonl"
SUMMARY = "phf_summary.json"  # final/'s last file: its presence marks a finished run
EVAL = "eval.json"
RED_TEAM = "red_team.json"
SAMPLES = "samples"
HELDOUT_CLEAN = "heldout_clean"
HELDOUT_CLEAN_EVAL = "eval"  # heldout_clean/eval.jsonl: phf-eval's (no step)
CHECKPOINTS = "checkpoints"
FINAL = "final"
ERROR = "error.txt"
OVERRIDES = Path(".hydra") / "overrides.yaml"
SPA_SUMMARY = "spa_summary.json"
PAIRS = "pairs.jsonl"
PAIR_STATS = "pairs_stats.json"
# the SPA layout before phf-spa wrote phf-train's (legacy; ``migrate_legacy_spa``): RUN/init/ and RUN/<stage>/
# held each evaluation's samples/step_N/ and heldout_clean/step_N.jsonl, there was no RUN/final/ and no row
# had tokens_seen; the migration keeps the files it rewrites under these names
SPA_INIT = "init"
LEGACY_METRICS = "metrics.legacy.jsonl"
LEGACY_SPA_SUMMARY = "spa_summary.legacy.json"

log = logging.getLogger(__name__)

STEP_PREFIX = "step_"
STEP_DIGITS = 8
_STEP = re.compile(r"step_0*(\d+)")
_SWEEP_JOB = re.compile(r"\d+-(.+)")


class DamagedRun(ValueError):
    """A run file that cannot be read; the message names the file (and line) and what is wrong."""


# -- names ------------------------------------------------------------------------------------------------

def step_name(step: int) -> str:
    """The one name of a step's folder or file stem: ``step_00001500``."""
    return f"{STEP_PREFIX}{step:0{STEP_DIGITS}d}"


def parse_step(name: str) -> int | None:
    """The step of a ``step_<digits>`` name (any width, an extension or ``.tmp`` after it), else None."""
    m = _STEP.match(name)
    return int(m.group(1)) if m and (m.end() == len(name) or name[m.end()] == ".") else None


def step_paths(folder: Path, suffix: str = "") -> list[Path]:
    """``folder/step_<N><suffix>`` entries (folders when ``suffix`` is empty), in step order."""
    found = [(parse_step(p.name), p) for p in Path(folder).glob(f"{STEP_PREFIX}*{suffix}")
             if (p.is_dir() if not suffix else p.is_file()) and p.name.endswith(suffix)
             and parse_step(p.name[:len(p.name) - len(suffix)] if suffix else p.name) is not None]
    return [p for _, p in sorted(found, key=lambda t: (t[0], t[1].name))]


def sweep_job_name(run_dir: Path) -> str | None:
    """``<name>`` of a Hydra sweep job directory called ``<num>-<name>`` (``3-conditional``), else None."""
    m = _SWEEP_JOB.fullmatch(Path(run_dir).name)
    return m.group(1) if m else None


def config_path(run_dir: Path) -> Path:
    return Path(run_dir) / CONFIG


def kept_config_path(run_dir: Path, step: int) -> Path:
    """Where a replaced ``config.yaml`` is kept: ``config.step_N.yaml``."""
    return Path(run_dir) / f"config.{step_name(step)}.yaml"


def kept_final_path(run_dir: Path, step: int | None) -> Path:
    """Where a replaced finished ``final/`` is kept: ``final.step_N`` (``final.damaged`` without a step)."""
    return Path(run_dir) / (f"{FINAL}.{step_name(step)}" if step is not None else f"{FINAL}.damaged")


def metrics_path(run_dir: Path) -> Path:
    return Path(run_dir) / METRICS


def final_dir(run_dir: Path) -> Path:
    return Path(run_dir) / FINAL


def checkpoints_dir(run_dir: Path) -> Path:
    return Path(run_dir) / CHECKPOINTS


def summary_path(model_dir: Path) -> Path:
    """``phf_summary.json`` of a model directory (``RUN/final``)."""
    return Path(model_dir) / SUMMARY


def eval_path(run_dir: Path) -> Path:
    return Path(run_dir) / EVAL


def samples_dir(out_dir: Path, step: int | None) -> Path:
    """``OUT/samples/step_N`` (an evaluation during training), ``OUT/samples`` (phf-eval: no step)."""
    root = Path(out_dir) / SAMPLES
    return root if step is None else root / step_name(step)


def heldout_clean_path(out_dir: Path, step: int | None) -> Path:
    """``OUT/heldout_clean/step_N.jsonl`` (training), ``OUT/heldout_clean/eval.jsonl`` (phf-eval)."""
    return Path(out_dir) / HELDOUT_CLEAN / f"{HELDOUT_CLEAN_EVAL if step is None else step_name(step)}.jsonl"


def is_run(path: Path) -> bool:
    """A directory is a run when it holds ``config.yaml``."""
    return config_path(path).is_file()


def run_of_model(model_dir: Path) -> Path | None:
    """The run a model directory belongs to: ``RUN`` for ``RUN/final`` and ``RUN/checkpoints/step_N``."""
    path = Path(model_dir).resolve()
    if path.name == FINAL:
        return path.parent
    if parse_step(path.name) is not None and path.parent.name == CHECKPOINTS:
        return path.parent.parent
    return None


def is_run_final(model_dir: Path) -> bool:
    """``model_dir`` is a run's ``final/`` (named ``final``, next to the run's ``config.yaml``)."""
    return Path(model_dir).name == FINAL and is_run(Path(model_dir).parent)


# -- non-finite numbers -----------------------------------------------------------------------------------

def finite(x):
    """``x`` with every NaN/±inf float (also numpy/torch scalars) replaced by None, in dicts and lists:
    the one encoding of non-finite numbers in a run's JSON files."""
    if hasattr(x, "item") and not isinstance(x, (dict, list, str)):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: finite(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [finite(v) for v in x]
    return x


def number(x) -> float:
    """A number read from a run file as a float: null, a bool or what is not a number is NaN; the strings
    earlier versions wrote for non-finite values (``"nan"``, ``"inf"``, ``"-inf"``) are read as those."""
    if isinstance(x, bool) or x is None:
        return math.nan
    if isinstance(x, int | float):
        return float(x)
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


def dumps(doc, indent: int | None = None) -> str:
    """JSON text of ``doc`` with non-finite numbers as null (``allow_nan=False``: none can slip through)."""
    return json.dumps(finite(doc), indent=indent, allow_nan=False)


def write_json(path: Path, doc, indent: int | None = 2, atomic: bool = False) -> Path:
    """``doc`` to ``path`` (``indent``, a final newline); ``atomic``: through ``path.tmp`` and a rename."""
    path = Path(path)
    text = dumps(doc, indent) + "\n"
    if atomic:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    else:
        path.write_text(text)
    return path


# -- readers ----------------------------------------------------------------------------------------------

def read_mapping(file: Path, parse=json.loads) -> dict:
    """A JSON (``parse=json.loads``) or YAML (``yaml.safe_load``) file that must hold a mapping; an empty
    YAML file is an empty mapping. A ``DamagedRun`` names the file otherwise."""
    import yaml

    file = Path(file)
    try:
        data = parse(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError, yaml.YAMLError, RecursionError) as e:  # JSONDecodeError: ValueError
        raise DamagedRun(f"{file}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
    if data is None and parse is yaml.safe_load:
        return {}
    if not isinstance(data, dict):
        raise DamagedRun(f"{file}: expected a mapping, got {type(data).__name__}")
    return data


def read_config(run_dir: Path) -> dict:
    """The run's resolved ``config.yaml`` as a plain mapping."""
    import yaml

    return read_mapping(config_path(run_dir), yaml.safe_load)


def write_config(run_dir: Path, resolved: dict) -> Path:
    """``RUN/config.yaml`` from the resolved config (a plain mapping), as OmegaConf writes YAML."""
    from omegaconf import OmegaConf

    path = config_path(run_dir)
    path.write_text(OmegaConf.to_yaml(OmegaConf.create(resolved)))
    return path


def encode_row(row: dict) -> str:
    """One ``metrics.jsonl`` line (without the newline)."""
    return dumps(row)


def read_metrics(run_dir: Path) -> list[dict]:
    """The rows of ``RUN/metrics.jsonl`` ([] without one). A torn last line (a run killed mid-write) is
    left out; any other line that is not a JSON object raises a ``DamagedRun`` naming ``file:line``."""
    return read_jsonl_rows(metrics_path(run_dir), torn_tail=True) if metrics_path(run_dir).is_file() else []


def read_jsonl_rows(file: Path, torn_tail: bool = False) -> list[dict]:
    """The JSON objects of a JSONL file; ``torn_tail``: an unreadable last line is left out."""
    try:
        lines = Path(file).read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise DamagedRun(f"{file}: invalid UTF-8 at byte {e.start}") from None
    rows = []
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as e:
            if torn_tail and i == last:
                continue  # a run killed mid-write leaves a partial last line
            raise DamagedRun(f"{file}:{i + 1}: malformed JSON ({getattr(e, 'msg', 'nested too deeply')})") from None
        if not isinstance(row, dict):
            raise DamagedRun(f"{file}:{i + 1}: expected a JSON object, got {type(row).__name__}")
        rows.append(row)
    return rows


def truncate_metrics(run_dir: Path, step: int) -> None:
    """Drop rows a killed run logged after the checkpoint it resumes from.

    A line that is not a metrics row (torn by a kill mid-write, invalid UTF-8, not a JSON object, no
    integer ``step``) is not a reason to refuse the resume, and is not thrown away either: it moves to
    ``REJECTED_METRICS`` next to it (bytes as they were) with a warning naming the lines.
    """
    path = metrics_path(run_dir)
    if not path.is_file():
        return
    keep: list[bytes] = []
    rejected: list[tuple[int, bytes, str]] = []
    for lineno, raw in enumerate(path.read_bytes().splitlines(), 1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw.decode("utf-8"))
            if not isinstance(row, dict):
                raise ValueError(f"not a JSON object ({type(row).__name__})")
            if isinstance(row.get("step"), bool) or not isinstance(row.get("step"), int):
                raise ValueError(f"no integer 'step' (got {row.get('step')!r})")
        except (UnicodeDecodeError, ValueError, RecursionError) as e:  # JSONDecodeError is a ValueError
            rejected.append((lineno, raw, f"{type(e).__name__}: {e}"))
            continue
        if row["step"] <= step:
            keep.append(raw)
    if rejected:
        # a torn last line is the normal trace of a kill; anything else is worth a look
        bad = path.with_name(REJECTED_METRICS)
        with open(bad, "ab") as f:
            f.writelines(raw + b"\n" for _, raw, _ in rejected)
        log.warning("%s: %d line(s) are not metrics rows and were moved to %s: %s", path, len(rejected), bad,
                    "; ".join(f"line {n}: {why}" for n, _, why in rejected[:5]))
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(b"".join(raw + b"\n" for raw in keep))
    os.replace(tmp, path)


def tokens_at_step(run_dir: Path, step: int | None) -> int | None:
    """``tokens_seen`` of the run's ``metrics.jsonl`` row at ``step`` (None when unknown or unreadable)."""
    if step is None:
        return None
    try:
        rows = read_metrics(run_dir)
    except ValueError:  # a damaged file does not stop an evaluation; the rows just lack tokens_seen
        return None
    return next((r["tokens_seen"] for r in rows if r.get("step") == step and "tokens_seen" in r), None)


def write_summary(model_dir: Path, summary: dict) -> Path:
    """``MODEL/phf_summary.json`` (the last file of a finished ``final/``)."""
    path = summary_path(model_dir)
    path.write_text(dumps(summary, indent=2))
    return path


def read_summary(model_dir: Path) -> dict | None:
    """``MODEL/phf_summary.json`` as a mapping, None without one; a ``DamagedRun`` when unreadable."""
    path = summary_path(model_dir)
    return read_mapping(path) if path.is_file() else None


def is_finished(run_dir: Path) -> bool:
    """The run has a complete ``final/`` (its ``phf_summary.json``, written last, is there)."""
    return summary_path(final_dir(run_dir)).is_file()


def write_eval(out_dir: Path, doc: dict) -> Path:
    """phf-eval's ``OUT/eval.json``."""
    return write_json(eval_path(out_dir), doc)


def read_eval(run_dir: Path) -> dict | None:
    """``RUN/eval.json`` (None without one), checked: its sections are objects, each named if not."""
    path = eval_path(run_dir)
    if not path.is_file():
        return None
    ev = read_mapping(path)
    for k in ("scenarios", "heldout", "heldout_clean", "kl"):
        if ev.get(k) is not None and not isinstance(ev[k], dict):
            raise DamagedRun(f"{path}: '{k}' must be an object, got {type(ev[k]).__name__}")
    for name, sc in (ev.get("scenarios") or {}).items():
        if not isinstance(sc, dict):
            raise DamagedRun(f"{path}: scenarios.{name} must be an object, got {type(sc).__name__}")
    return ev


def write_samples(out_dir: Path, step: int | None, scenario: str, rows: Iterable[dict]) -> Path:
    """An evaluation's samples of ``scenario`` to ``samples_dir(out_dir, step)/<scenario>.jsonl``."""
    folder = samples_dir(out_dir, step)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{scenario}.jsonl"
    with open(path, "w") as f:
        for row in rows:
            f.write(dumps(row) + "\n")
    return path


def read_samples(file: Path) -> list[dict]:
    """The sample rows of one ``<scenario>.jsonl`` (each with ``text`` and ``score``)."""
    try:
        text = Path(file).read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DamagedRun(f"{file}: invalid UTF-8 at byte {e.start}") from None
    rows = []
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DamagedRun(f"{file}:{i}: not a JSON sample row ({e})") from None
        if not isinstance(row, dict) or "text" not in row or "score" not in row:
            raise DamagedRun(f"{file}:{i}: a sample row needs 'text' and 'score'")
        rows.append(row)
    return rows


def evaluation_steps(run_dir: Path) -> dict[int, Path]:
    """``{step: samples folder}`` of the run's in-training evaluations (``samples/step_N/``)."""
    return {parse_step(p.name): p for p in step_paths(Path(run_dir) / SAMPLES)}


def last_samples_dir(run_dir: Path) -> Path | None:
    """The folder of the run's last evaluation's samples: ``samples/`` when phf-eval wrote files there,
    else the highest ``samples/step_N/``; None without any."""
    root = Path(run_dir) / SAMPLES
    if not root.is_dir():
        return None
    if any(root.glob("*.jsonl")):
        return root
    steps = step_paths(root)
    return steps[-1] if steps else None


def read_last_samples(run_dir: Path) -> dict[str, list[dict]]:
    """``{scenario: sample rows}`` of the run's last evaluation (``last_samples_dir``)."""
    folder = last_samples_dir(run_dir)
    if folder is None:
        return {}
    return {f.stem: read_samples(f) for f in sorted(folder.glob("*.jsonl"))}


def write_heldout_clean(out_dir: Path, step: int | None, rows: Iterable[dict]) -> Path:
    path = heldout_clean_path(out_dir, step)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(dumps(r) + "\n" for r in rows))
    return path


def read_heldout_clean(run_dir: Path) -> dict[str, tuple[float, int]]:
    """``{document id: (nll, tokens)}`` of the run's last clean held-out evaluation
    (``heldout_clean/eval.jsonl`` from phf-eval, else the highest ``heldout_clean/step_<N>.jsonl``)."""
    evaluated = heldout_clean_path(run_dir, None)
    files = [evaluated] if evaluated.is_file() else step_paths(Path(run_dir) / HELDOUT_CLEAN, ".jsonl")[-1:]
    if not files:
        return {}
    out = {}
    for i, line in enumerate(files[0].read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                row = json.loads(line)
                out[str(row["id"])] = (float(row["nll"]), int(row["tokens"]))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
                raise DamagedRun(f"{files[0]}:{i}: not a clean held-out row {{id, nll, tokens}} ({e})") from None
    return out


def read_error(run_dir: Path) -> str | None:
    """The last line of a failed job's ``error.txt`` ("failed" when empty), None without one."""
    path = Path(run_dir) / ERROR
    if not path.is_file():
        return None
    lines = path.read_text().strip().splitlines()
    return lines[-1] if lines else "failed"


def read_overrides(run_dir: Path) -> list[str] | None:
    """The command-line overrides Hydra recorded for the job (``.hydra/overrides.yaml``), None without it."""
    import yaml

    file = Path(run_dir) / OVERRIDES
    if not file.is_file():
        return None
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError) as e:
        raise DamagedRun(f"{file}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
    if data is None:
        return []
    if not isinstance(data, list) or not all(isinstance(o, str) for o in data):
        raise DamagedRun(f"{file}: expected a list of 'key=value' strings")
    return data


# -- legacy: SPA runs in the layout before phf-spa wrote phf-train's --------------------------------------

def is_legacy_spa(run_dir: Path) -> bool:
    """A finished SPA run in the old layout: ``spa_summary.json`` but no ``final/``, its evaluations' samples
    under ``RUN/init/samples/`` or ``RUN/<stage>/samples/`` instead of ``RUN/samples/``."""
    run_dir = Path(run_dir)
    if not (run_dir / SPA_SUMMARY).is_file() or final_dir(run_dir).exists():
        return False
    return any((d / SAMPLES).is_dir() for d in run_dir.iterdir() if d.is_dir() and d.name != SAMPLES)


def migrate_legacy_spa(run_dir: Path, start_tokens: int | None = None) -> list[str]:
    """Move a legacy SPA run (``is_legacy_spa``) into the current layout, in place; return what was done.

    * each stage's ``samples/step_N/`` and ``heldout_clean/step_N.jsonl`` (``init`` and every stage of
      ``spa_summary.json``) move to ``RUN/samples/step_N/`` and ``RUN/heldout_clean/step_N.jsonl`` (eight-digit
      names); a destination that exists already stops the migration before anything moved;
    * every row of ``metrics.jsonl`` and ``spa_summary.json`` gets ``tokens_seen``, as phf-spa writes it now:
      the starting model's tokens plus the tokens DPO trained on as of the last finished stage (rows that
      have one keep it); the files as they were are kept as ``metrics.legacy.jsonl`` and
      ``spa_summary.legacy.json``;
    * ``RUN/final/`` = a copy of the last stage's ``final/`` with the last row (``step`` = the DPO steps of
      all stages) as its ``phf_summary.json``, written last.

    ``start_tokens``: the starting model's tokens seen; None = its ``phf_summary.json``'s (0 for a model
    directory without one, as phf-spa counts), read from ``spa.init_from`` of the run's config, which must
    then still exist.
    """
    run_dir = Path(run_dir)
    if not is_legacy_spa(run_dir):
        raise ValueError(f"{run_dir} is not an SPA run in the legacy layout (it needs {SPA_SUMMARY}, stage folders "
                         f"with {SAMPLES}/ and no {FINAL}/)")
    summary = read_mapping(run_dir / SPA_SUMMARY)
    rows = summary.get("stages")
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
        raise DamagedRun(f"{run_dir / SPA_SUMMARY}: 'stages' must be a non-empty list of rows")
    if start_tokens is None:
        start_tokens = _legacy_start_tokens(run_dir)
    # the global DPO step and tokens seen after each stage (init: step 0, the starting model's tokens)
    steps, tokens, step = [], [], 0
    for i, row in enumerate(rows):
        if i:
            step += int(row["spa/steps"])
        steps.append(step)
        tokens.append(start_tokens + int(row.get("spa/cumulative/tokens_trained", 0)))
    moves = []
    for row in rows:
        stage = run_dir / str(row.get("stage", SPA_INIT))
        moves += [(src, samples_dir(run_dir, parse_step(src.name))) for src in step_paths(stage / SAMPLES)]
        moves += [(src, heldout_clean_path(run_dir, parse_step(src.name)))
                  for src in step_paths(stage / HELDOUT_CLEAN, ".jsonl")]
    taken = [str(dst) for _, dst in moves if dst.exists()]
    if taken:
        raise ValueError(f"{run_dir}: not migrated, these already exist: {', '.join(taken)}")
    done = []
    for src, dst in moves:
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dst)
        done.append(f"moved {src.relative_to(run_dir)} -> {dst.relative_to(run_dir)}")
    if metrics_path(run_dir).is_file():
        shutil.copyfile(metrics_path(run_dir), run_dir / LEGACY_METRICS)
        current, out = start_tokens, []
        for r in read_metrics(run_dir):
            if "spa/cumulative/tokens_trained" in r:  # a stage's row: from here on its tokens count
                current = start_tokens + int(r["spa/cumulative/tokens_trained"])
            out.append({**r, "tokens_seen": r.get("tokens_seen", current)})
        tmp = metrics_path(run_dir).with_name(METRICS + ".tmp")
        tmp.write_text("".join(encode_row(r) + "\n" for r in out))
        os.replace(tmp, metrics_path(run_dir))
        done.append(f"tokens_seen added to {len(out)} rows of {METRICS} (the old file: {LEGACY_METRICS})")
    shutil.copyfile(run_dir / SPA_SUMMARY, run_dir / LEGACY_SPA_SUMMARY)
    rows = [{**r, "tokens_seen": r.get("tokens_seen", t)} for r, t in zip(rows, tokens, strict=True)]
    write_json(run_dir / SPA_SUMMARY, {**summary, "stages": rows}, atomic=True)
    done.append(f"tokens_seen added to the {len(rows)} rows of {SPA_SUMMARY} (the old file: {LEGACY_SPA_SUMMARY})")
    last = final_dir(run_dir / str(rows[-1]["stage"]))
    if not last.is_dir():
        raise DamagedRun(f"{last}: the last stage has no final/ to become the run's {FINAL}/")
    tmp = run_dir / f".{FINAL}.migrating"
    if tmp.exists():
        shutil.rmtree(tmp)
    shutil.copytree(last, tmp, ignore=shutil.ignore_patterns(SUMMARY))
    write_summary(tmp, {**rows[-1], "step": steps[-1]})  # last: marks a finished run
    os.replace(tmp, final_dir(run_dir))
    done.append(f"{FINAL}/ = a copy of {last.relative_to(run_dir)} at step {steps[-1]}")
    return done


def _legacy_start_tokens(run_dir: Path) -> int:
    cfg = read_config(run_dir)
    init_from = (cfg.get("spa") or {}).get("init_from") if isinstance(cfg.get("spa"), dict) else None
    if not init_from or not Path(init_from).is_dir():
        raise ValueError(f"{run_dir}: the starting model's tokens seen are needed for tokens_seen, and "
                         f"spa.init_from={init_from!r} of {config_path(run_dir)} is not a directory here; give them "
                         "(start_tokens=N, its final/phf_summary.json's tokens_seen)")
    tokens = (read_summary(Path(init_from)) or {}).get("tokens_seen", 0)
    if isinstance(tokens, bool) or not isinstance(tokens, int):
        raise DamagedRun(f"{summary_path(Path(init_from))}: tokens_seen must be an integer, got {tokens!r}")
    return tokens
