"""The garbage-collector settings of long-running processes."""

from __future__ import annotations

import gc

from pipeline.gc_tuning import OLDER, gc_tuned, tune_gc


def test_tuning_for_a_block_restores_the_thresholds() -> None:
    before = gc.get_threshold()
    with gc_tuned(100_000):
        assert gc.get_threshold() == (100_000, *OLDER)
    assert gc.get_threshold() == before


def test_zero_leaves_pythons_settings_alone() -> None:
    before = gc.get_threshold()
    tune_gc(0)
    with gc_tuned(0):
        assert gc.get_threshold() == before
    assert gc.get_threshold() == before
