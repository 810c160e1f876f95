"""Code shape the project keeps (issue 10): no function longer than 80 lines."""

import ast
from pathlib import Path

import translution

MAX_LINES = 80


def test_no_function_longer_than_80_lines():
    root = Path(translution.__file__).parent
    long = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_LINES:
                    long.append(f"{path.relative_to(root)}:{node.lineno} {node.name} ({lines})")
    assert not long, "functions longer than 80 lines: " + ", ".join(long)
