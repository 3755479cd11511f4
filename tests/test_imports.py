"""phf's import structure, read from the source with ``ast`` (nothing is imported).

Every ``phf.*`` import counts: module-level, function-local and ``TYPE_CHECKING`` ones, ``import phf.x``,
``from phf.x import y``, ``from phf import x`` and relative imports. A node of the graph is a subpackage
(the first component after ``phf.``: ``phf.objectives``, ``phf.spa``, ...) or a top-level module
(``phf.train``, ``phf.model``, ...), which is its own node.

* No cycle between nodes: a function-local import that "dodges" a cycle is still one.
* ``phf.train`` is the entry point: no other module imports it (what it shares lives elsewhere). The one
  exception is ``phf.cli``, the console scripts' module (``[project.scripts]``): ``phf-train`` must answer
  ``--help`` and shell tab completion without importing torch, so ``phf.cli.train`` hands Hydra a job that
  imports ``phf.train`` only when it runs. That import must stay inside a function: at module level it
  would load torch on every Tab again. ``phf.cli`` itself must not import torch (``test_cli.py``).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "phf"


def module_name(path: Path) -> str:
    parts = ["phf", *path.relative_to(ROOT).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def resolve_relative(module: str, is_package: bool, level: int, target: str | None) -> str:
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([target] if target else []))


def phf_imports(module: str, path: Path) -> list[tuple[str, int]]:
    """(imported phf module, line) for every phf import in ``path``, wherever it stands."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names if a.name == "phf" or a.name.startswith("phf.")]
        elif isinstance(node, ast.ImportFrom):
            target = node.module
            if node.level:
                target = resolve_relative(module, path.name == "__init__.py", node.level, node.module)
            if target is None or not (target == "phf" or target.startswith("phf.")):
                continue
            # ``from phf import train`` / ``from phf.eval import sampling`` import the submodule itself
            subs = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in MODULES]
            out += [(s, node.lineno) for s in subs] or [(target, node.lineno)]
    return out


def node_of(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2])


def edges() -> dict[tuple[str, str], list[str]]:
    """(importing node, imported node) -> the ``path:line`` places that make the edge."""
    out: dict[tuple[str, str], list[str]] = defaultdict(list)
    for module, path in MODULES.items():
        for target, line in phf_imports(module, path):
            a, b = node_of(module), node_of(target)
            if a != b and b != "phf":  # the bare package (version string) is no dependency
                out[a, b].append(f"{path.relative_to(ROOT.parent)}:{line}")
    return out


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle ``[n0, n1, ..., n0]`` of ``graph``, or None."""
    state: dict[str, int] = {}  # 1 = on the DFS stack, 2 = done
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state and (found := visit(m)):
                return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (found := visit(n)):
            return found
    return None


def test_the_walk_sees_local_relative_and_from_imports(tmp_path):
    """The parser catches what a cycle hides behind: imports inside functions, ``from phf import x``."""
    src = "def f():\n    from phf.spa.loss import x\n    from phf import train\n    from . import base\n"
    p = tmp_path / "dpo.py"
    p.write_text(src)
    found = dict(phf_imports("phf.objectives.dpo", p))
    assert found == {"phf.spa.loss": 2, "phf.train": 3, "phf.objectives.base": 4}
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_cycle_between_phf_subpackages():
    e = edges()
    graph: dict[str, set[str]] = defaultdict(set)
    for a, b in e:
        graph[a].add(b)
    cycle = find_cycle(graph)
    if cycle:
        lines = [f"  {a} -> {b}: {', '.join(e[a, b])}" for a, b in zip(cycle, cycle[1:], strict=False)]
        pytest.fail("import cycle between phf subpackages: " + " -> ".join(cycle) + "\n" + "\n".join(lines))


#: the console scripts' module, allowed to import the entry points inside its functions (module doc)
CONSOLE_SCRIPTS = "phf.cli"


def module_level_lines(path: Path) -> set[int]:
    """Lines of the imports that run when ``path`` is imported (not inside a function)."""
    lines: set[int] = set()

    def visit(node):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                continue
            if isinstance(child, ast.Import | ast.ImportFrom):
                lines.add(child.lineno)
            visit(child)

    visit(ast.parse(path.read_text(), str(path)))
    return lines


def train_importers() -> dict[str, list[str]]:
    out: dict[str, list[str]] = defaultdict(list)
    for module, path in MODULES.items():
        if module == "phf.train":
            continue
        eager = module_level_lines(path) if module == CONSOLE_SCRIPTS else None
        for target, line in phf_imports(module, path):
            if target == "phf.train" or target.startswith("phf.train."):
                if eager is not None and line not in eager:  # phf.cli's lazy import, inside its job
                    continue
                out[module].append(f"{path.relative_to(ROOT.parent)}:{line}")
    return dict(out)


def test_only_the_entry_point_is_phf_train():
    importers = train_importers()
    assert not importers, f"modules importing phf.train (the entry point): {importers}"


def test_the_console_scripts_import_phf_train_lazily_and_nothing_else_may(tmp_path):
    """The exception is exactly phf.cli's function-local import: the same import at module level of
    phf.cli, or inside a function of any other module, is still flagged."""
    assert any(t == "phf.train" for t, _ in phf_imports(CONSOLE_SCRIPTS, MODULES[CONSOLE_SCRIPTS]))
    eager = tmp_path / "cli.py"
    eager.write_text("from phf.train import job\n\ndef train():\n    from phf.train import main\n")
    assert module_level_lines(eager) == {1}
    lazy_elsewhere = tmp_path / "report.py"
    lazy_elsewhere.write_text("def f():\n    from phf.train import job\n")
    assert module_level_lines(lazy_elsewhere) == set()  # so only the CONSOLE_SCRIPTS module may do this


#: the training runtime: the loops, their optimizer and schedules, their on-disk state and lock
TRAINING_RUNTIME = ("phf.train", "phf.trainer", "phf.optim", "phf.train_state", "phf.spa")


def reachable(start: str) -> dict[str, str]:
    """Every phf module that importing ``start`` may load (imports inside functions count, and so do
    the ``__init__`` of every package on the way), each mapped to the module that imports it first."""
    via: dict[str, str] = {start: start}
    todo = [start]
    while todo:
        module = todo.pop()
        targets = [t for t, _ in phf_imports(module, MODULES[module])]
        for target in targets:
            parts = target.split(".")
            for i in range(2, len(parts) + 1):  # phf.a.b loads phf.a first
                name = ".".join(parts[:i])
                if name in MODULES and name not in via:
                    via[name] = module
                    todo.append(name)
    return via


def test_reachable_follows_packages_and_local_imports():
    graph = reachable("phf.scorers.detoxify")
    assert graph["phf.devices"] == "phf.scorers.detoxify"  # resolve_device: a function-local import
    assert "phf.scorers" in graph  # the package's __init__ runs too


def test_scorers_do_not_import_the_training_runtime():
    """The scorers sit below the training loops (docs/architecture.md): a scorer may ask the low floor
    for its device (``phf.devices``), never for anything of the loops, or scoring would load them."""
    bad = {}
    for module in MODULES:
        if module == "phf.scorers" or module.startswith("phf.scorers."):
            via = reachable(module)
            hits = [m for m in via if any(m == r or m.startswith(r + ".") for r in TRAINING_RUNTIME)]
            if hits:
                bad[module] = {m: via[m] for m in hits}
    assert not bad, f"scorer modules reaching the training runtime (module: imported by): {bad}"
