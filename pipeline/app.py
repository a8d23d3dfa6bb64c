"""faust entry point: ``faust -A pipeline.app worker`` (``touchpoint worker`` wraps it).

Settings are read here, once, from the environment; everything below takes them as
arguments.
"""

from __future__ import annotations

from pipeline import failpoints
from pipeline.chclient import without_dataframes
from pipeline.faust_app import build_app
from pipeline.gc_tuning import tune_gc
from pipeline.logs import configure_logging
from pipeline.settings import load_settings

settings = load_settings()
configure_logging(settings.log_level)
failpoints.configure(settings.failpoints)
without_dataframes()  # the sinks insert rows; pandas would cost ~70 MB for nothing
app = build_app(settings)
tune_gc(settings.gc_young_threshold)  # after the imports: they are frozen out of the scans

__all__ = ["app", "settings"]
