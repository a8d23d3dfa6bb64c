-- Journeys: stage transitions, journeys and the current profile per customer, written by the
-- journey stage. All three are ReplacingMergeTree(version, is_deleted): a late event or an
-- identity merge re-emits a row with a higher version, and retracts keys that no longer
-- exist with is_deleted = 1, so `FINAL` shows the current rows only.

-- One row per journey and stage entered (from_stage '' for a journey's first stage).
CREATE TABLE IF NOT EXISTS stage_transitions
(
    customer_id          String,
    journey_id           String,
    from_stage           LowCardinality(String),
    to_stage             LowCardinality(String),
    at                   DateTime64(3, 'UTC'),
    channel              LowCardinality(String),
    event_id             String,
    seconds_in_previous  Nullable(Float64),
    version              UInt64,
    is_deleted           UInt8 DEFAULT 0,
    ingested_at          DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(version, is_deleted)
ORDER BY (customer_id, journey_id, to_stage)
SETTINGS non_replicated_deduplication_window = 1000;

-- One row per journey: its span, current (furthest) stage and the stages entered.
CREATE TABLE IF NOT EXISTS journeys
(
    customer_id    String,
    journey_id     String,
    started_at     DateTime64(3, 'UTC'),
    last_seen      DateTime64(3, 'UTC'),
    current_stage  LowCardinality(String),
    stages         Array(LowCardinality(String)),
    completed      Array(LowCardinality(String)),
    version        UInt64,
    is_deleted     UInt8 DEFAULT 0,
    ingested_at    DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(version, is_deleted)
ORDER BY (customer_id, journey_id)
SETTINGS non_replicated_deduplication_window = 1000;

-- The current profile of each customer; a customer merged into another is deleted.
CREATE TABLE IF NOT EXISTS customers
(
    customer_id  String,
    journey_id   String,
    stage        LowCardinality(String),
    first_seen   DateTime64(3, 'UTC'),
    last_seen    DateTime64(3, 'UTC'),
    channels     Map(LowCardinality(String), UInt32),
    segment      LowCardinality(String),
    purchases    UInt32,
    journeys     UInt16,
    version      UInt64,
    is_deleted   UInt8 DEFAULT 0,
    ingested_at  DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(version, is_deleted)
ORDER BY customer_id
SETTINGS non_replicated_deduplication_window = 1000;

-- Hashed identifiers per current customer (email and phone are keyed hashes unless
-- TOUCHPOINT_PII_MODE=clear), from the stored touchpoints and the identity overrides.
CREATE VIEW IF NOT EXISTS customer_identifiers AS
SELECT
    current_customer_id AS customer_id,
    groupUniqArrayIf(email, email != '') AS emails,
    groupUniqArrayIf(phone, phone != '') AS phones,
    groupUniqArrayIf(user_id, user_id != '') AS user_ids,
    groupUniqArrayIf(crm_id, crm_id != '') AS crm_ids,
    groupUniqArrayIf(anonymous_id, anonymous_id != '') AS anonymous_ids
FROM touchpoints_current
GROUP BY current_customer_id;
