-- Live stage metrics, late changes and drop-off alerts, written by the metrics stage
-- (pipeline/stage_metrics.py; definitions in docs/metrics.md).

-- When a journey completed a stage (its first `completed_by` event): a conversion from it.
ALTER TABLE stage_transitions
    ADD COLUMN IF NOT EXISTS completed_at Nullable(DateTime64(3, 'UTC')) AFTER seconds_in_previous;

-- One row per 1-minute event-time window x stage x channel x segment (channel and segment
-- also 'all'), re-emitted with a higher version while the window can change. `is_final`
-- rows never change again; read with FINAL (or argMax by version).
CREATE TABLE IF NOT EXISTS stage_metrics
(
    window_start               DateTime('UTC'),
    window_end                 DateTime('UTC'),
    stage                      LowCardinality(String),
    channel                    LowCardinality(String),
    segment                    LowCardinality(String),
    entries                    UInt32,
    conversions                UInt32,
    dropoffs                   UInt32,
    conversion_rate            Nullable(Float64),
    dropoff_rate               Nullable(Float64),
    in_stage                   Int64,
    median_seconds_to_convert  Nullable(Float64),
    p90_seconds_to_convert     Nullable(Float64),
    events                     UInt32,
    ingest_lag_seconds         Float64,
    late_events                UInt32,
    is_complete                UInt8,
    is_final                   UInt8,
    version                    UInt64,
    written_at                 DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (stage, channel, segment, window_start)
SETTINGS non_replicated_deduplication_window = 1000;

-- Every change that reached a window after it was final: not applied to stage_metrics, kept
-- here so that stage_metrics + late_events always add up to a recomputation from
-- stage_transitions (`touchpoint verify metrics`).
CREATE TABLE IF NOT EXISTS late_events
(
    window_start  DateTime('UTC'),
    stage         LowCardinality(String),
    channel       LowCardinality(String),
    segment       LowCardinality(String),
    customer_id   String,
    journey_id    String,
    measure       LowCardinality(String),
    delta         Int8,
    final_until   DateTime64(3, 'UTC'),
    written_at    DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = MergeTree
ORDER BY (window_start, stage)
SETTINGS non_replicated_deduplication_window = 1000;

-- Drop-off spike alerts: one row when an alert fires, one when it resolves.
CREATE TABLE IF NOT EXISTS alerts
(
    alert_id           String,
    state              LowCardinality(String),
    stage              LowCardinality(String),
    channel            LowCardinality(String),
    window_start       DateTime('UTC'),
    dropoff_rate       Float64,
    baseline_rate      Float64,
    relative_increase  Float64,
    zscore             Float64,
    volume             UInt32,
    started_at         DateTime('UTC'),
    evaluated_at       DateTime64(3, 'UTC'),
    summary            String,
    written_at         DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
ORDER BY (alert_id, state)
SETTINGS non_replicated_deduplication_window = 1000;
