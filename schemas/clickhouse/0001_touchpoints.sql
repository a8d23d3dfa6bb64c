-- Validated touchpoints, one row per event_id (ReplacingMergeTree: FINAL collapses replays).
-- email and phone hold keyed HMAC-SHA256 hashes unless TOUCHPOINT_PII_MODE=clear.
CREATE TABLE IF NOT EXISTS touchpoints
(
    event_id            String,
    occurred_at         DateTime64(3, 'UTC'),
    produced_at         Nullable(DateTime64(3, 'UTC')),
    received_at         DateTime64(3, 'UTC'),
    ingested_at         DateTime64(3, 'UTC') DEFAULT now64(3),
    channel             LowCardinality(String),
    event_type          LowCardinality(String),
    known_type          Bool,
    stage               LowCardinality(String),
    customer_id         String,
    journey_id          String,
    identifiers         Map(LowCardinality(String), String),
    anonymous_id        String,
    user_id             String,
    email               String,
    phone               String,
    chat_visitor_id     String,
    crm_id              String,
    properties          String,
    extra               String,
    revenue             Nullable(Float64),
    currency            LowCardinality(String),
    campaign            String,
    order_id            String,
    conversation_id     String,
    call_id             String,
    topic               LowCardinality(String),
    wait_seconds        Nullable(Float64),
    duration_seconds    Nullable(Float64),
    outcome             LowCardinality(String),
    csat                Nullable(UInt8),
    nps                 Nullable(UInt8),
    schema_version      UInt16,
    source              LowCardinality(String),
    dropped_identifiers Array(String),
    src_topic           LowCardinality(String),
    src_partition       UInt32,
    src_offset          UInt64,
    version             UInt64
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (toDate(occurred_at), event_id)
SETTINGS non_replicated_deduplication_window = 1000;
