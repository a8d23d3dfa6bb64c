-- late_events becomes idempotent. A worker that takes the metrics stage over replays the
-- metric inputs after the last committed offset and writes their late changes again (the
-- insert deduplication token only matches when the batches have the same bounds, which a
-- takeover does not keep). Each change now has a deterministic `change_id` (the offset of the
-- metric input that caused it and its index there) and the table keeps one row per id: read
-- it with FINAL. Rows written before this migration get a random id (kept as they are).
CREATE TABLE IF NOT EXISTS late_events_v2
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
    change_id     String,
    written_at    DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
ORDER BY (window_start, stage, change_id)
SETTINGS non_replicated_deduplication_window = 1000;

INSERT INTO late_events_v2
SELECT window_start, stage, channel, segment, customer_id, journey_id, measure, delta,
    final_until, toString(generateUUIDv4()), written_at
FROM late_events;

EXCHANGE TABLES late_events AND late_events_v2;

DROP TABLE late_events_v2;
