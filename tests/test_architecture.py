"""The shape of the code: no import circle, core names no plugin module, one model
builder for training and profiling."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mkdcore.config import load_config
from mkdcore.models.build import build, student_spec

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("mkdcore", "plugins", "workers")
PAPER = sorted((ROOT / "configs" / "paper").glob("*.yaml"))


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> project modules it imports, at any depth (function-level imports too),
    except under ``if TYPE_CHECKING``."""
    modules = {_module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found: set[str] = set()

        def visit(node: ast.AST) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                    continue
                if isinstance(child, ast.Import):
                    found.update(a.name for a in child.names)
                elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                    found.add(child.module)
                    found.update(f"{child.module}.{a.name}" for a in child.names)
                visit(child)

        visit(ast.parse(path.read_text()))
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return found


def test_the_import_graph_has_no_circle():
    assert cycles(import_graph()) == []


def test_the_cycle_finder_finds_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_core_never_imports_the_builtin_plugins_and_common_is_gone():
    graph = import_graph()
    core = {m: deps for m, deps in graph.items() if m.startswith("mkdcore")}
    assert not any(d.startswith("plugins") for deps in core.values() for d in deps)  # plugins come via entry points
    assert "mkdcore.stages.common" not in graph


def test_the_control_plane_never_imports_torch():
    """Loading every installed plugin, planning an experiment and ``mkd --help`` import no
    torch (nor torchvision or timm): a plugin builds its heavy parts in its factory. Torch and
    torchvision cost 3 s of CPU per process, paid by every queue stage, ``mkd submit`` and
    ``mkd status`` before they did anything."""
    code = ("import sys; from mkdcore.plugins import get_manager; from mkdcore.config import load_config;"
            "from mkdcore.stages.dag import plan; get_manager();"
            f"plan(load_config({str(ROOT / 'configs' / 'smoke.yaml')!r}, []));"
            "from mkdcore.cli.main import main\ntry: main(['--help'])\nexcept SystemExit: pass\n"
            "print('heavy:', sorted(m for m in ('torch', 'torchvision', 'timm') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "heavy: []"


def _tree(model: torch.nn.Module) -> list[tuple[str, str, tuple[int, ...] | None]]:
    params = dict(model.named_parameters())
    out = []
    for name, module in model.named_modules():
        out.append((name, type(module).__name__, None))
    out += [(n, "param", tuple(p.shape)) for n, p in params.items()]
    return out


@pytest.mark.parametrize("config", PAPER, ids=[p.stem for p in PAPER])
def test_profile_measures_exactly_what_the_student_stage_trains(config, monkeypatch, plugin_manager):
    """`mkd profile` and the student stage build through the same function: same module
    tree, same parameter shapes, same parameter count (per paper config)."""
    from mkdcore.cli.main import main
    from mkdcore.stages import student as student_stage
    from mkdcore.stages.base import StageContext
    from mkdcore.stages.dag import plan

    cfg = load_config(config, [])
    cfg = cfg.model_copy(update={"student": cfg.student.model_copy(update={"pretrained": None})})
    trained: dict[str, torch.nn.Module] = {}

    class Built(Exception):
        pass

    def capture(ctx, model, *args, **kwargs):
        trained["model"] = model
        raise Built

    monkeypatch.setattr(student_stage, "train_on_frames", capture)
    monkeypatch.setattr(student_stage, "load_teacher_head", lambda ctx: None)
    nodes = {n.name: n for n in plan(cfg)}
    with torch.device("meta"), pytest.raises(Built):
        student_stage.run(StageContext(cfg=cfg, node=nodes["student:lite-mkd"], nodes=nodes, device=torch.device("cpu")))
    with torch.device("meta"):
        profiled, _ = build(student_spec(cfg, "lite-mkd"))
    assert _tree(trained["model"]) == _tree(profiled)

    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exc:
        main(["profile", str(config), "--json"])
    assert exc.value.code in (0, None)
    assert json.loads(out.getvalue())["params"] == sum(p.numel() for p in trained["model"].parameters())
