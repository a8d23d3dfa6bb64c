-- Identity stitching: late merges re-attribute history without rewriting it.
-- identity_overrides maps a customer id that events were stamped with to the customer it
-- belongs to now (flattened: never a chain). ReplacingMergeTree by version: the newest wins.
CREATE TABLE IF NOT EXISTS identity_overrides
(
    customer_id          String,
    current_customer_id  String,
    merged_at            DateTime64(3, 'UTC'),
    version              UInt64,
    is_deleted           UInt8 DEFAULT 0,
    ingested_at          DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(version)
ORDER BY customer_id
SETTINGS non_replicated_deduplication_window = 1000;

-- Every identifier the resolver kept out of a customer, with the reason (for audits).
CREATE TABLE IF NOT EXISTS identity_refusals
(
    event_id      String,
    node          String,
    identifier_type LowCardinality(String),
    reason        LowCardinality(String),
    customer_id   String,
    occurred_at   DateTime64(3, 'UTC'),
    detail        String,
    ingested_at   DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (event_id, node, reason)
SETTINGS non_replicated_deduplication_window = 1000;

-- Identity at event time is touchpoints.customer_id; current identity is this view.
CREATE VIEW IF NOT EXISTS touchpoints_current AS
SELECT
    t.*,
    if(o.current_customer_id = '', t.customer_id, o.current_customer_id) AS current_customer_id
FROM touchpoints AS t FINAL
LEFT JOIN (
    SELECT customer_id, argMax(current_customer_id, version) AS current_customer_id
    FROM identity_overrides
    GROUP BY customer_id
    HAVING argMax(is_deleted, version) = 0
) AS o ON o.customer_id = t.customer_id;
