"""The shape of a checkout (issue 19's figures): Python files and lines per package, the largest
functions, and the packages an image crosses on its way from `cli.py ask` to the report.

    python bench/bench_layers.py tree [REPO]
    python bench/bench_layers.py trace INDEX IMAGE [REPO]   (an index built by REPO's own cli.py)

REPO defaults to this checkout; give another (a `git worktree` of an older commit) to compare.
`trace` profiles one `ask --generator grounded` and prints the package of each project function
in the order they are first called (consecutive repeats folded), at three grains: top-level
packages, rag/'s sub-packages, and layers (tests/test_imports.py's order; the flat rag/ modules
of older trees mapped to the layer their code moved to). A call "up the layers" is a lower
layer calling into a higher one: a callback handed down, since no import goes that way.
"""
from __future__ import annotations

import ast
import runpy
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
SKIP = {".venv", ".git", "tests"}
# the layer of a rag/ module or sub-package by name, old flat names included
FOUNDATION = {"types", "images", "registry", "manifest", "store", "settings", "index_lock",
              "negation", "clinical_labels", "text", "__init__"}
ENCODERS = {"encoder", "open_clip_encoder", "backbones", "lexical_features", "domain_probe",
            "encoders"}
WIRING = {"building", "pipeline"}
RANK = {"foundation": 0, "encoders": 1, "corpora": 2, "indexers": 2, "retrievers": 3,
        "generator": 3, "wiring": 4, "application": 5, "cli.py": 6, "bench": 6}


def tree(repo: Path) -> None:
    files = [p for p in repo.rglob("*.py") if not set(p.relative_to(repo).parts) & SKIP]
    counts: dict[str, list[int]] = {}
    functions = []
    for path in files:
        text = path.read_text(encoding="utf-8")
        count = counts.setdefault(_place(repo, str(path))[1], [0, 0])
        count[0] += 1
        count[1] += len(text.splitlines())
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                functions.append((node.end_lineno - node.lineno + 1,
                                  f"{path.relative_to(repo)}:{node.name}"))
    tests = list((repo / "tests").rglob("*.py"))
    test_lines = sum(len(t.read_text(encoding="utf-8").splitlines()) for t in tests)
    print(f"{len(files)} files, {sum(c[1] for c in counts.values())} lines "
          f"(tests: {len(tests)} files, {test_lines} lines)")
    for name in sorted(counts):
        print(f"  {name:18} {counts[name][0]:3} files {counts[name][1]:6} lines")
    modules = [p for p in (repo / "rag").glob("*.py") if p.name != "__init__.py"]
    print(f"rag/ top-level modules: {len(modules)}")
    print(f"largest functions ({sum(n > 60 for n, _ in functions)} of {len(functions)} "
          "over 60 lines):")
    for lines, name in sorted(functions, reverse=True)[:8]:
        print(f"  {lines:4} {name}")


def trace(index: Path, image: Path, repo: Path) -> None:
    sys.path.insert(0, str(repo))  # REPO's packages, not this checkout's
    app = runpy.run_path(str(repo / "cli.py"), run_name="traced_cli")["app"]
    calls = []

    def profile(frame, event, arg):
        if event == "call":
            code, back = frame.f_code, frame.f_back
            calls.append((code.co_filename, code.co_name, code.co_firstlineno,
                          back.f_code.co_filename if back else ""))

    sys.setprofile(profile)
    try:
        app(["ask", "--image", str(image), "--index", str(index), "--generator", "grounded"],
                standalone_mode=False)
    finally:
        sys.setprofile(None)
    places: dict[str, tuple[str, str, str] | None] = {}

    def place(filename: str):
        if filename not in places:
            places[filename] = _place(repo, filename)
        return places[filename]

    seen, first = set(), []
    for call in calls:
        if call[:3] not in seen:
            seen.add(call[:3])
            first.append(call)
    for grain, label in enumerate(("top-level packages", "rag/ sub-packages", "layers")):
        path: list[str] = []
        for call in first:
            where = place(call[0])
            if where and (not path or path[-1] != where[grain]):
                path.append(where[grain])
        entries = sum(p.startswith("rag") and (i == 0 or not path[i - 1].startswith("rag"))
                      for i, p in enumerate(path))
        print(f"[{label}] {len(path) - 1} crossings"
              + (f", enters rag/ {entries} times" if grain < 2 else ""))
        print("   " + " > ".join(path))
    edges, up = set(), set()
    for filename, name, _, caller in calls:
        a, b = place(caller), place(filename)
        if a and b and a[1] != b[1]:
            edges.add((a[1], b[1]))
            if RANK[b[2]] > RANK[a[2]]:
                up.add(f"{a[1]} -> {b[1]}.{name}")
    print(f"{len(edges)} distinct package-to-package call edges; "
          f"{len(up)} up the layers: {sorted(up)}")


def _place(repo: Path, filename: str) -> tuple[str, str, str] | None:
    """(top-level package, sub-package, layer) of a project source file; None for others."""
    if filename.startswith("<") or not filename.startswith(str(repo)):
        return None
    parts = Path(filename).relative_to(repo).parts
    if parts[0] in SKIP:
        return None
    fine = f"{parts[0]}/{parts[1]}" if parts[0] in ("rag", "generator") and len(parts) > 2 \
        else parts[0]
    layer = parts[0]
    if parts[0] == "rag":
        name = parts[1].removesuffix(".py")
        layer = ("foundation" if name in FOUNDATION else "encoders" if name in ENCODERS
                 else "wiring" if name in WIRING else "application")
    return parts[0], fine, layer


if __name__ == "__main__":
    args = sys.argv[1:]
    if args[:1] == ["tree"]:
        tree(Path(args[1]).resolve() if len(args) > 1 else HERE)
    elif args[:1] == ["trace"] and len(args) in (3, 4):
        trace(Path(args[1]), Path(args[2]), Path(args[3]).resolve() if len(args) > 3 else HERE)
    else:
        sys.exit(__doc__)
