"""The import rules of the package (house-style §1), checked on the syntax tree of every module.

Imports inside functions count too: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest
from conftest import REPO

PKG = REPO / "src" / "rwkvchat"
THIRD_PARTY = {
    "numpy",
    "tokenizers",
    "typer",
    "rich",
    "prompt_toolkit",
    "gguf",
    "torch",
    "click",
    "platformdirs",
}
SESSION_LAYER = {"session_events", "session_loop", "session_store"}
LEAVES = {
    "history",
    "tokenizer",
    "sampling",
    "state",
    "commands",
    "prompts",
    "reference",
    "reference_legacy",
}
# Internal modules each restricted module may import, beyond `errors`.
ALLOWED_INTERNAL = {
    "tokenizer": {"_native"},
    "state": {"history"},
    "reference": {"reference_legacy"},
    "reference_legacy": {"reference"},
    "session": {"model", "tokenizer", "sampling", "state", "history", "commands", "prompts"} | SESSION_LAYER,
    "repl": {"session", "commands"} | SESSION_LAYER,
}
# session.py's helpers (events, saved conversations) sit in the session layer: they may import what
# session may import, and only the session layer, repl and cli may import them.
for _name in SESSION_LAYER:
    ALLOWED_INTERNAL[_name] = ALLOWED_INTERNAL["session"] | {"session"}
ALLOWED_THIRD_PARTY = {
    "tokenizer": {"numpy", "tokenizers"},
    "session": {"numpy"},
    "session_events": {"numpy"},
    "session_loop": {"numpy"},
    "session_store": {"numpy"},
    "repl": {"numpy", "prompt_toolkit", "rich"},
}


def _modules() -> list[tuple[str, Path]]:
    """(dotted name below rwkvchat, path) of every module, e.g. ("cli.info", .../cli/info.py)."""
    out = []
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG).with_suffix("")
        parts = [p for p in rel.parts if p != "__init__"]
        out.append((".".join(parts) or "__init__", path))
    return out


def _imports(name: str, path: Path) -> tuple[set[str], set[str]]:
    """(internal top-level modules, external top-level packages) imported anywhere in the file."""
    tree = ast.parse(path.read_text(), str(path))
    package = name.split(".")[:-1] if path.name != "__init__.py" else name.split(".")
    if name == "__init__":
        package = []
    internal, external = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                top = alias.name.split(".")
                if top[0] == "rwkvchat":
                    internal.add(top[1] if len(top) > 1 else "__init__")
                else:
                    external.add(top[0])
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                top = (node.module or "").split(".")
                if top[0] == "rwkvchat":
                    if len(top) > 1:
                        internal.add(top[1])
                    else:
                        internal.update(a.name for a in node.names)
                else:
                    external.add(top[0])
            else:
                base = package[: len(package) - (node.level - 1)] if node.level > 1 else list(package)
                target = base + (node.module.split(".") if node.module else [])
                if target:
                    internal.add(target[0])
                else:
                    internal.update(a.name for a in node.names)
    return internal, external


MODULES = _modules()


def test_modules_found():
    names = {n for n, _ in MODULES}
    assert {"model", "_native", "reference", "convert", "cli", "cli.info", "errors"} <= names
    assert SESSION_LAYER <= names


@pytest.mark.parametrize("name,path", MODULES, ids=[n for n, _ in MODULES])
def test_import_rules(name, path):
    internal, external = _imports(name, path)
    top = name.split(".")[0]
    own = internal - {top}
    unknown = external - set(sys.stdlib_module_names) - THIRD_PARTY - {"__future__"}
    assert not unknown, f"{name} imports unknown packages {unknown}"
    if "_native" in own:
        assert top in {"model", "tokenizer", "quantize"}, f"{name} imports _native"
    if own & (SESSION_LAYER | {"session"}):
        assert top in SESSION_LAYER | {"session", "repl", "cli", "__init__"}, (
            f"{name} imports the session layer"
        )
    if "cli" in own:
        assert name == "__main__", f"{name} imports cli"
    if "typer" in external or "click" in external:
        assert top == "cli", f"{name} imports typer/click"
    if "rich" in external:
        assert top in {"cli", "repl"}, f"{name} imports rich"
    if "prompt_toolkit" in external:
        assert top == "repl", f"{name} imports prompt_toolkit"
    if top in LEAVES or top in ALLOWED_INTERNAL:
        allowed = {"errors"} | ALLOWED_INTERNAL.get(top, set())
        assert own <= allowed, f"{name} imports {own - allowed}"
        third = external - set(sys.stdlib_module_names) - {"__future__"}
        allowed_third = ALLOWED_THIRD_PARTY.get(top, {"numpy"})
        assert third <= allowed_third, f"{name} imports {third - allowed_third}"
