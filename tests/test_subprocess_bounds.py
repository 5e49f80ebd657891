"""Every subprocess the tests start is bounded: a hung tool fails its test, never the whole run.

A podman teardown (`podman system reset --force`, no timeout) once hung past pytest's limit on a
loaded machine and failed a 41-minute run. This reads the tests' source: every `subprocess.run`
(and check_output, check_call, call) passes `timeout=`, every wait on a process (`.wait()`,
`.communicate()`) has a timeout, no `with subprocess.Popen(...)` (its exit waits unbounded), and no
teardown resets a whole container engine instead of removing the test's own storage.
"""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent
RUNNERS = frozenset({"run", "check_output", "check_call", "call"})


def source_files() -> list[Path]:
    return sorted(p for p in TESTS.rglob("*.py") if "node_modules" not in p.parts)


def has_timeout(call: ast.Call) -> bool:
    return any(keyword.arg in ("timeout", None) for keyword in call.keywords)


def thread_events(tree: ast.AST) -> set[str]:
    """Names bound to threading.Event(): their wait() is a server's own loop, not a process."""
    return {
        target.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign)
        and isinstance(node.value, ast.Call)
        and ast.unparse(node.value.func) == "threading.Event"
        for target in node.targets
        if isinstance(target, ast.Name)
    }


def unbounded_calls(source: str) -> list[tuple[int, str]]:
    tree = ast.parse(source)
    events = thread_events(tree)
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.With):
            for item in node.items:
                if ast.unparse(item.context_expr).startswith("subprocess.Popen("):
                    found.append((node.lineno, "with subprocess.Popen(...)"))
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        receiver, name = node.func.value, node.func.attr
        receiver_name = receiver.id if isinstance(receiver, ast.Name) else None
        if receiver_name == "subprocess" and name in RUNNERS:
            if not has_timeout(node):
                found.append((node.lineno, f"subprocess.{name} without timeout="))
        elif (
            name in ("wait", "communicate")
            and not node.args
            and not has_timeout(node)
            and receiver_name not in events
        ):
            found.append((node.lineno, f"{ast.unparse(node)} without a timeout"))
    return sorted(found)


def test_every_subprocess_in_the_tests_is_bounded() -> None:
    problems = [
        f"{path.relative_to(TESTS.parent)}:{line}: {what}"
        for path in source_files()
        for line, what in unbounded_calls(path.read_text(encoding="utf-8"))
    ]
    assert problems == [], "\n".join(problems)


def test_no_teardown_resets_a_whole_container_engine() -> None:
    offenders = [
        str(path.relative_to(TESTS.parent))
        for path in source_files()
        if path != Path(__file__).resolve()
        and '"system", "reset"' in path.read_text(encoding="utf-8")
    ]
    assert offenders == []


def test_the_check_itself_finds_unbounded_calls() -> None:
    source = (
        "import subprocess, threading\n"
        "subprocess.run(['true'])\n"
        "subprocess.run(['true'], timeout=5)\n"
        "p = subprocess.Popen(['sleep', '1'])\n"
        "p.wait()\n"
        "p.wait(timeout=5)\n"
        "p.communicate()\n"
        "with subprocess.Popen(['true']) as q:\n    pass\n"
        "stop = threading.Event()\n"
        "stop.wait()\n"
    )
    assert [line for line, _ in unbounded_calls(source)] == [2, 5, 7, 8]
