"""The tree shows the layers (docs/architecture.md): each package imports only from the layers below it,
the adapters (page and API) never import each other or torch, and no import cycle runs between modules."""
import ast
import sys
from pathlib import Path

MODULES = Path(__file__).resolve().parent.parent / "modules"

# Top-level modules that everything may use: plain data and syntax, no models or jobs.
FOUNDATION = {"modules.paths", "modules.cmd_args", "modules.options", "modules.prompt_parser",
              "modules.infotext_utils", "modules.localization", "modules.extensions", "modules.user_files",
              "modules.shared_services"}  # which running program the extension modules speak for (no imports)
LAYERS = {
    "modules.models": 1,
    "modules.conditioning": 2,
    "modules.sampling": 3,
    "modules.postprocessing": 3,
    "modules.generation": 4,
    "modules.ui": 5,
    "modules.api": 5,
}
SURFACE = 6  # other top-level modules: the A1111-compatible surface for scripts and extensions
ADAPTERS = ("modules.ui", "modules.api")


def module_name(path: Path) -> str:
    parts = path.relative_to(MODULES.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(name: str) -> int:
    if name in FOUNDATION or name == "modules":
        return 0
    for package, number in LAYERS.items():
        if name == package or name.startswith(package + "."):
            return number
    return SURFACE


def imports(path: Path) -> set[str]:
    """Every module of ours that `path` imports, at the top or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names
                      if (MODULES.parent / (node.module + "." + a.name).replace(".", "/")).with_suffix(".py").exists()
                      or (MODULES.parent / (node.module + "." + a.name).replace(".", "/")).is_dir()}
    return {name for name in found if name == "modules" or name.startswith("modules.")}


def all_modules() -> dict[str, set[str]]:
    return {module_name(p): imports(p) for p in sorted(MODULES.rglob("*.py"))}


def test_every_module_imports_only_from_its_layer_or_below():
    upward = [f"{name} (layer {layer(name)}) imports {dep} (layer {layer(dep)})"
              for name, deps in all_modules().items() for dep in sorted(deps) if layer(dep) > layer(name)]
    assert not upward, "\n".join(upward)


def test_adapters_stay_thin():
    graph = all_modules()
    crossing = [f"{name} imports {dep}" for name, deps in graph.items() for dep in deps
                for a, b in (ADAPTERS, ADAPTERS[::-1]) if name.startswith(a) and dep.startswith(b)]
    assert not crossing, "\n".join(crossing)
    torch_users = []
    for path in MODULES.rglob("*.py"):
        if module_name(path).startswith(ADAPTERS):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module or ""] if isinstance(node, ast.ImportFrom) else []
                torch_users += [f"{module_name(path)} imports {n}" for n in names if n.split(".")[0] == "torch"]
    assert not torch_users, "\n".join(torch_users)


def test_no_import_cycles():
    graph = all_modules()

    def resolve(dep: str) -> str | None:
        while dep and dep not in graph:
            dep = dep.rpartition(".")[0]
        return dep or None

    edges = {name: {d for dep in deps if (d := resolve(dep)) and d != name and not name.startswith(d + ".")
                    and not d == "modules"}
             for name, deps in graph.items()}
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                cycle = trail[trail.index(nxt):] + [node, nxt] if nxt in trail else [node, nxt]
                cycles.append(" -> ".join(cycle))
            elif nxt not in state:
                visit(nxt, trail + [node])
        state[node] = 2

    for name in graph:
        if name not in state:
            visit(name, [])
    assert not cycles, "\n".join(cycles)


def test_the_checks_see_an_upward_import(tmp_path, monkeypatch):
    """The walk finds imports inside functions and ranks packages, so a violation cannot slip through."""
    fake = tmp_path / "modules" / "models"
    fake.mkdir(parents=True)
    (fake / "bad.py").write_text("def f():\n    from modules.generation.job import Job\n")
    monkeypatch.setattr(sys.modules[__name__], "MODULES", tmp_path / "modules")
    graph = all_modules()
    assert graph["modules.models.bad"] == {"modules.generation.job"}
    assert layer("modules.models.bad") < layer("modules.generation.job")
