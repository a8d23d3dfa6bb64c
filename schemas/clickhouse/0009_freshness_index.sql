-- The freshness figures (the dashboard's events/s and ingest lag, Grafana's) read the
-- touchpoints ingested in the last minute: `ingested_at` is not in the sort key, so each of
-- those reads scanned the whole table (10 M rows: benchmarks/README.md, queries). A minmax
-- index per granule lets them skip every granule ingested before the window. MATERIALIZE
-- builds it for the parts of an existing database (a background mutation).
ALTER TABLE touchpoints
    ADD INDEX IF NOT EXISTS ingested_at_minmax ingested_at TYPE minmax GRANULARITY 1;
ALTER TABLE touchpoints MATERIALIZE INDEX ingested_at_minmax;
