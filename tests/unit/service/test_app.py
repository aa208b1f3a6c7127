"""What the BentoML service module does for itself at startup."""

from __future__ import annotations

import gc
import weakref

from service.app import freeze_startup_heap


class _Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only a collection frees it


def test_the_startup_heap_is_frozen_after_a_collection() -> None:
    garbage = _Node()
    gone = weakref.ref(garbage)
    del garbage
    before = gc.get_freeze_count()
    try:
        freeze_startup_heap()
        assert gc.get_freeze_count() > before
        assert gone() is None  # collected before the freeze, not kept in it
    finally:
        gc.unfreeze()
