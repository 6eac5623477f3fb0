"""No function-local import of naslung's own modules without a comment saying why (issue 14 item 3).

A function-local import hides an edge of the import graph; the only accepted reason is deferring a heavy optional
dependency (or keeping ``naslung --help`` fast), and then a comment says so: on the import's own line(s), or on a
comment-only line directly above it. An import that directly follows another explained local import of ours (a
group, one statement per line) shares that explanation.
"""

from __future__ import annotations

import ast
import io
import tokenize
from pathlib import Path

import pytest
from import_graph import OUR_PACKAGES, module_files

import naslung.pipeline

__all__ = ["unexplained_local_imports"]

#: The repository root: offenders are listed as paths relative to it.
ROOT = Path(naslung.pipeline.__file__).resolve().parents[1]


def _is_ours(node: ast.Import | ast.ImportFrom) -> bool:
    """Whether ``node`` imports a naslung module: ``import naslung...``, ``from naslung... import`` or relative."""
    if isinstance(node, ast.ImportFrom):
        return node.level > 0 or (node.module or "").split(".")[0] == "naslung"
    return any(alias.name.split(".")[0] == "naslung" for alias in node.names)


def _local_imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Imports of naslung modules anywhere inside a function body (nested blocks and classes included)."""
    found = []
    for function in ast.walk(tree):
        if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            for node in ast.walk(function):
                if isinstance(node, (ast.Import, ast.ImportFrom)) and _is_ours(node):
                    found.append(node)
    return sorted({id(n): n for n in found}.values(), key=lambda n: n.lineno)  # nested functions are walked twice


def unexplained_local_imports(source: str) -> list[int]:
    """The line numbers (1-based) of function-local imports of naslung modules in ``source`` that have no comment.

    A comment counts when it is on one of the import's lines or on a comment-only line directly above it; an import
    on the line right after another explained local import of ours shares its comment.
    """
    comments: set[int] = set()
    comment_only: set[int] = set()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            comments.add(token.start[0])
            if not token.line[: token.start[1]].strip():
                comment_only.add(token.start[0])
    explained_ends: set[int] = set()
    offenders = []
    for node in _local_imports(ast.parse(source)):
        lines = range(node.lineno, (node.end_lineno or node.lineno) + 1)
        above = node.lineno - 1
        if any(line in comments for line in lines) or above in comment_only or above in explained_ends:
            explained_ends.add(lines[-1])
        else:
            offenders.append(node.lineno)
    return offenders


CASES = [
    # (source, expected offending lines)
    ["import os\nfrom naslung.networks import profile\n", []],  # module level: not local
    ["def f():\n    from naslung.networks import profile\n    return profile\n", [2]],
    ["def f():\n    import naslung.networks\n", [2]],
    ["def f():\n    from . import space\n", [2]],  # relative: one of ours
    ["def f():\n    from .space import arch_to_text\n", [2]],
    ["def f():\n    import torch\n    from monai.bundle import ConfigParser\n", []],  # third-party: not ours
    ["def f():\n    from naslung.networks import profile  # heavy: torch\n", []],
    ["def f():\n    # keeps `naslung --help` fast\n    from naslung.networks import profile\n", []],
    ["def f():\n    x = 1  # a comment about x\n    from naslung.networks import profile\n", [3]],
    ["def f():\n    # fast --help\n    from naslung.a import b\n    from naslung.c import d\n", []],  # a group
    ["def f():\n    # fast --help\n    from naslung.a import b\n\n    from naslung.c import d\n", [5]],
    ["def f():\n    from naslung.a import (\n        b,  # why\n        c,\n    )\n", []],
    ["class A:\n    def m(self):\n        if True:\n            from naslung.a import b\n", [4]],
    ["def f():\n    def g():\n        from naslung.a import b\n", [3]],
    ["def f():\n    s = '# not a comment'\n    from naslung.a import b\n", [3]],
    ["def f():\n    from naslungx import b\n", []],  # another package whose name starts alike
]


@pytest.mark.parametrize("source, expected", CASES)
def test_the_checker_finds_unexplained_local_imports(source, expected):
    assert unexplained_local_imports(source) == expected


def test_no_unexplained_function_local_import_of_our_modules():
    known = module_files(OUR_PACKAGES)
    assert len(known) > 100  # the walk found the packages' modules
    offenders = [
        f"{path.resolve().relative_to(ROOT) if path.resolve().is_relative_to(ROOT) else path}:{line}"
        for path in sorted(set(known.values()))
        for line in unexplained_local_imports(path.read_text(encoding="utf-8"))
    ]
    assert offenders == [], (
        "function-local import(s) of naslung modules without a comment saying why; move them to module level (a "
        "cycle means a concept sits in the wrong module), or, to defer a heavy optional dependency, add a comment "
        "on the line or the line above:\n" + "\n".join(offenders)
    )
