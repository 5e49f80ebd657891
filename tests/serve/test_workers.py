"""The pre-fork supervisor's preparation: what the workers will share is made before the fork."""

from __future__ import annotations

import gc
import sys

from cxml.serve.workers import release_free_memory, share_before_fork


def test_share_before_fork_imports_the_web_stack_and_freezes_the_heap() -> None:
    try:
        share_before_fork()
        assert gc.get_freeze_count() > 0
        for module in ("fastapi", "uvicorn.protocols.http.httptools_impl", "PIL.PngImagePlugin"):
            assert module in sys.modules
    finally:
        gc.unfreeze()


def test_release_free_memory_is_harmless_to_call_again() -> None:
    release_free_memory()
    release_free_memory()
