-- Every rejected message with the reason, each error and the original bytes.
CREATE TABLE IF NOT EXISTS dead_letters
(
    failed_at       DateTime64(3, 'UTC'),
    reason          LowCardinality(String),
    stage           LowCardinality(String),
    event_id        String,
    error_paths     Array(String),
    error_messages  Array(String),
    error_values    Array(String),
    error_text      String,
    original        String,
    original_size   UInt32,
    src_topic       LowCardinality(String),
    src_partition   UInt32,
    src_offset      UInt64,
    ingested_at     DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(failed_at)
ORDER BY (src_topic, src_partition, src_offset, cityHash64(original))
SETTINGS non_replicated_deduplication_window = 1000;
