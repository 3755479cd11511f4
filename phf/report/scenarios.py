"""Which evaluation scenarios a report shows: the headline, its secondary protocols and their titles."""

from __future__ import annotations

import math

from phf.report.runs import Run, last_value


def headline_scenario(runs: list[Run], wanted: str | None) -> str:
    if wanted:
        return wanted
    names: list[str] = []
    for r in runs:
        if r.eval:
            names += list(r.eval.get("scenarios", {}))
        for row in r.rows:
            names += [k.split("/")[1] for k in row if k.startswith("eval/") and k.endswith("/score")]
    return "unconditional" if "unconditional" in names or not names else names[0]


def _scenario_settings(run: Run) -> dict:
    node = ((run.cfg.get("task") or {}).get("eval") or {}).get("scenarios") or {}
    return node if isinstance(node, dict) else {}


def secondary_scenarios(runs: list[Run], headline: str) -> list[str]:
    """Scenarios that a run's config marks as a secondary protocol of ``headline`` (``secondary_to``) and
    that some run evaluated."""
    names = dict.fromkeys(name for r in runs for name, sc in _scenario_settings(r).items()
                          if isinstance(sc, dict) and sc.get("secondary_to") == headline)
    return [n for n in names if any(n in (r.eval or {}).get("scenarios", {}) or n in r.samples
                                    or math.isfinite(last_value(r, f"eval/{n}/score"))
                                    for r in runs)]


def titles(runs: list[Run], names: list[str]) -> dict[str, str]:
    """What each scenario is called (its config's ``title``), else its name."""
    out = {}
    for name in names:
        found = [sc.get("title") for r in runs for n, sc in _scenario_settings(r).items()
                 if n == name and isinstance(sc, dict) and sc.get("title")]
        out[name] = str(found[0]) if found else name
    return out
