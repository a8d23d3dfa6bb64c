-- Pain points: which touchpoints go with drop-off (definitions in docs/painpoints.md).
-- Every "now" below is the watermark: the newest event time in touchpoints (capped at the
-- server clock), so a replay of the same events gives the same outcomes.

-- The configured stage model (pipeline/config/stages.toml), written by `touchpoint migrate`
-- (pipeline/stage_model_table.py). The rows of the highest version are the model.
CREATE TABLE IF NOT EXISTS stage_model
(
    stage            String,
    rank             UInt8,
    timeout_seconds  Nullable(Float64),
    completed_by     Array(String),
    is_last          UInt8,
    source           String,
    version          UInt64,
    written_at       DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(version)
ORDER BY stage;

-- One row per current journey and stage the journey has been at (its furthest stage at some
-- time). left_at: when it first entered a later stage; converted_at: the earlier of that and
-- completed_at. outcome: 'converted' (converted_at within the stage's timeout of entered_at),
-- 'dropped_off' (the timeout passed first), 'open'. window_closed: the timeout has passed
-- since entered_at, so the outcome is final.
CREATE VIEW IF NOT EXISTS stage_outcomes AS
WITH
    (SELECT least(max(occurred_at), now64(3, 'UTC')) FROM touchpoints) AS watermark,
    (SELECT max(version) FROM stage_model) AS model_version,
    model AS (
        SELECT stage, rank, timeout_seconds, is_last
        FROM stage_model FINAL
        WHERE version = model_version
    ),
    live AS (
        SELECT customer_id, journey_id, started_at, last_seen, current_stage
        FROM journeys FINAL
        WHERE is_deleted = 0
          AND current_stage != ''
          AND customer_id NOT IN (
              SELECT customer_id FROM identity_overrides FINAL WHERE is_deleted = 0
          )
    ),
    entries AS (
        SELECT t.customer_id AS customer_id, t.journey_id AS journey_id, t.to_stage AS stage,
               m.rank AS rank, m.timeout_seconds AS timeout_seconds, m.is_last AS is_last,
               t.at AS entered_at, t.completed_at AS completed_at
        FROM stage_transitions AS t FINAL
        INNER JOIN model AS m ON m.stage = t.to_stage
        WHERE t.is_deleted = 0
    ),
    stays AS (
        SELECT e.customer_id AS customer_id, e.journey_id AS journey_id, e.stage AS stage,
               e.rank AS rank, e.timeout_seconds AS timeout_seconds, e.is_last AS is_last,
               e.entered_at AS entered_at, e.completed_at AS completed_at,
               minIf(l.entered_at, l.rank > e.rank) AS next_at,
               countIf(l.rank > e.rank) > 0 AS moved_on
        FROM entries AS e
        INNER JOIN entries AS l ON l.customer_id = e.customer_id AND l.journey_id = e.journey_id
        GROUP BY customer_id, journey_id, stage, rank, timeout_seconds, is_last, entered_at,
                 completed_at
    )
SELECT
    s.customer_id AS customer_id,
    s.journey_id AS journey_id,
    s.stage AS stage,
    s.rank AS rank,
    s.is_last AS is_last,
    j.current_stage AS current_stage,
    j.started_at AS started_at,
    j.last_seen AS last_seen,
    s.entered_at AS entered_at,
    if(s.moved_on, s.next_at, NULL) AS left_at,
    s.completed_at AS completed_at,
    s.completed_at IS NOT NULL AS completed,
    if(left_at IS NULL, completed_at, if(completed_at IS NULL, left_at,
       least(greatest(completed_at, s.entered_at), left_at))) AS converted_at,
    s.timeout_seconds AS timeout_seconds,
    watermark,
    toUnixTimestamp64Milli(s.entered_at) AS entered_ms,
    toInt64(s.timeout_seconds * 1000) AS timeout_ms,
    ifNull(toUnixTimestamp64Milli(watermark) - entered_ms > timeout_ms, 0) AS window_closed,
    multiIf(
        converted_at IS NOT NULL AND ifNull(
            toUnixTimestamp64Milli(converted_at) - entered_ms <= timeout_ms, 1), 'converted',
        window_closed, 'dropped_off',
        'open'
    ) AS outcome
FROM stays AS s
INNER JOIN live AS j ON j.customer_id = s.customer_id AND j.journey_id = s.journey_id
WHERE NOT s.moved_on OR s.next_at > s.entered_at;

-- One row per current journey: its current (furthest) stage and outcome. 'completed': the
-- current stage is completed (at any time) or is the last stage; 'dropped_off': the current
-- stage's timeout has passed since the journey entered it; 'open' otherwise.
CREATE VIEW IF NOT EXISTS journey_outcomes AS
SELECT
    customer_id,
    journey_id,
    started_at,
    last_seen,
    current_stage,
    entered_at AS entered_current_at,
    completed,
    timeout_seconds,
    watermark,
    multiIf(completed OR is_last, 'completed', outcome = 'dropped_off', 'dropped_off', 'open')
        AS outcome
FROM stage_outcomes
WHERE stage = current_stage;

-- Per touchpoint kind (stage x channel x event type x bucketed property): the journeys whose
-- stay at the stage is decided (window_closed), split by whether they met the kind while
-- at that stage, their drop-off at that stage, the lift and its 95% confidence intervals
-- (Katz log relative risk; Newcombe hybrid Wilson score for the difference).
CREATE VIEW IF NOT EXISTS painpoint_stats AS
WITH
    1.959963984540054 AS z,
    visits AS (
        SELECT customer_id, journey_id, stage, outcome = 'dropped_off' AS dropped,
               entered_ms, entered_ms + timeout_ms AS until_ms,
               if(left_at IS NULL, NULL, toUnixTimestamp64Milli(left_at)) AS left_ms,
               toUnixTimestamp64Milli(last_seen) AS last_ms
        FROM stage_outcomes
        WHERE window_closed
    ),
    met AS (
        SELECT v.customer_id AS customer_id, v.journey_id AS journey_id, v.stage AS stage,
               v.dropped AS dropped,
               arrayMap(p -> (t.channel, t.event_type, p.1, p.2), arrayFilter(p -> p.1 = '' OR p.2 != '', [
                   ('', ''),
                   ('wait_seconds', multiIf(t.wait_seconds IS NULL, '', t.wait_seconds < 60, '<1 min',
                                            t.wait_seconds <= 300, '1-5 min', '>5 min')),
                   ('duration_seconds', multiIf(t.duration_seconds IS NULL, '', t.duration_seconds < 60,
                                                '<1 min', t.duration_seconds <= 600, '1-10 min', '>10 min')),
                   ('csat', multiIf(t.csat IS NULL, '', t.csat <= 2, '1-2', t.csat = 3, '3', '4-5')),
                   ('nps', multiIf(t.nps IS NULL, '', t.nps <= 6, '0-6', t.nps <= 8, '7-8', '9-10')),
                   ('rating', multiIf(rating IS NULL, '', rating <= 2, '1-2', rating = 3, '3', '4-5')),
                   ('sentiment', multiIf(sentiment IS NULL, '', sentiment < -0.3, 'negative',
                                         sentiment <= 0.3, 'neutral', 'positive')),
                   ('resolved', if(JSONType(t.properties, 'resolved') = 'Bool',
                                   JSONExtractRaw(t.properties, 'resolved'), '')),
                   ('outcome', substring(JSONExtractString(t.properties, 'outcome'), 1, 40)),
                   ('topic', substring(JSONExtractString(t.properties, 'topic'), 1, 40)),
                   ('queue', substring(JSONExtractString(t.properties, 'queue'), 1, 40)),
                   ('bounce_type', substring(JSONExtractString(t.properties, 'bounce_type'), 1, 40))
               ])) AS kinds
        FROM (
            SELECT current_customer_id, channel, event_type, wait_seconds, duration_seconds, csat,
                   nps, properties, toUnixTimestamp64Milli(occurred_at) AS at_ms,
                   JSONExtract(properties, 'rating', 'Nullable(Float64)') AS rating,
                   JSONExtract(properties, 'sentiment', 'Nullable(Float64)') AS sentiment
            FROM touchpoints_current
        ) AS t
        INNER JOIN visits AS v ON v.customer_id = t.current_customer_id
        WHERE t.at_ms >= v.entered_ms AND t.at_ms <= v.until_ms AND t.at_ms <= v.last_ms
          AND (v.left_ms IS NULL OR t.at_ms < v.left_ms)
    ),
    visit_kinds AS (
        SELECT stage, dropped, arrayJoin(groupUniqArrayArray(kinds)) AS kind
        FROM met
        GROUP BY customer_id, journey_id, stage, dropped
    ),
    counts AS (
        SELECT stage, kind.1 AS channel, kind.2 AS event_type, kind.3 AS property,
               kind.4 AS bucket, count() AS journeys_with, countIf(dropped) AS dropped_with
        FROM visit_kinds
        GROUP BY stage, channel, event_type, property, bucket
    ),
    stage_totals AS (
        SELECT stage, count() AS stage_journeys, countIf(dropped) AS stage_dropped
        FROM visits
        GROUP BY stage
    ),
    type_totals AS (
        SELECT stage, channel, event_type, journeys_with AS type_journeys,
               dropped_with AS type_dropped
        FROM counts
        WHERE property = ''
    )
SELECT stage, channel, event_type, property, bucket, journeys_with, dropped_with,
       journeys_without, dropped_without, dropoff_with, dropoff_without, lift, lift_low,
       lift_high, difference, difference_low, difference_high, lift_within_type,
       lift_within_type_low, lift_within_type_high, type_journeys_without, type_dropped_without
FROM (
        SELECT
            c.stage AS stage,
            c.channel AS channel,
            c.event_type AS event_type,
            c.property AS property,
            c.bucket AS bucket,
            c.journeys_with AS journeys_with,
            c.dropped_with AS dropped_with,
            s.stage_journeys - c.journeys_with AS journeys_without,
            s.stage_dropped - c.dropped_with AS dropped_without,
            dropped_with / journeys_with AS dropoff_with,
            if(journeys_without = 0, NULL, dropped_without / journeys_without) AS dropoff_without,
            if(dropped_without = 0, NULL, dropoff_with / dropoff_without) AS lift,
            dropoff_with - dropoff_without AS difference,
            -- Katz log CI; 0.5 added to each cell when a dropped count is 0
            dropped_with = 0 OR dropped_without = 0 AS corrected,
            dropped_with + 0.5 * corrected AS ka,
            journeys_with + corrected AS kn1,
            dropped_without + 0.5 * corrected AS kc,
            journeys_without + corrected AS kn0,
            if(journeys_without = 0, NULL, sqrt(1 / ka - 1 / kn1 + 1 / kc - 1 / kn0)) AS log_se,
            exp(log((ka / kn1) / (kc / kn0)) - z * log_se) AS lift_low,
            exp(log((ka / kn1) / (kc / kn0)) + z * log_se) AS lift_high,
            -- Wilson score intervals of both rates, combined (Newcombe's hybrid score method)
            (dropoff_with + z * z / (2 * journeys_with)) / (1 + z * z / journeys_with) AS w1c,
            z * sqrt(dropoff_with * (1 - dropoff_with) / journeys_with + z * z / (4 * journeys_with * journeys_with))
                / (1 + z * z / journeys_with) AS w1h,
            (dropoff_without + z * z / (2 * journeys_without)) / (1 + z * z / journeys_without) AS w0c,
            z * sqrt(dropoff_without * (1 - dropoff_without) / journeys_without
                     + z * z / (4 * journeys_without * journeys_without))
                / (1 + z * z / journeys_without) AS w0h,
            difference - sqrt(pow(dropoff_with - (w1c - w1h), 2) + pow((w0c + w0h) - dropoff_without, 2))
                AS difference_low,
            difference + sqrt(pow((w1c + w1h) - dropoff_with, 2) + pow(dropoff_without - (w0c - w0h), 2))
                AS difference_high,
            -- the same touchpoint type at the same stage, other values of the property
            if(c.property = '', NULL, tt.type_journeys - c.journeys_with) AS type_journeys_without,
            if(c.property = '', NULL, tt.type_dropped - c.dropped_with) AS type_dropped_without,
            if(type_journeys_without > 0 AND type_dropped_without > 0,
               dropoff_with / (type_dropped_without / type_journeys_without), NULL) AS lift_within_type,
            dropped_with = 0 OR type_dropped_without = 0 AS tcorrected,
            type_dropped_without + 0.5 * tcorrected AS tc,
            type_journeys_without + tcorrected AS tn0,
            dropped_with + 0.5 * tcorrected AS ta,
            journeys_with + tcorrected AS tn1,
            if(type_journeys_without > 0, sqrt(1 / ta - 1 / tn1 + 1 / tc - 1 / tn0), NULL) AS tlog_se,
            exp(log((ta / tn1) / (tc / tn0)) - z * tlog_se) AS lift_within_type_low,
            exp(log((ta / tn1) / (tc / tn0)) + z * tlog_se) AS lift_within_type_high
        FROM counts AS c
        INNER JOIN stage_totals AS s ON s.stage = c.stage
        LEFT JOIN type_totals AS tt
            ON tt.stage = c.stage AND tt.channel = c.channel AND tt.event_type = c.event_type
);

-- The ranking: kinds met by at least 30 decided journeys (and not met by 30), highest lift
-- first. A property value that every journey with the event type at the stage has (e.g.
-- queue 'sales' at consideration, where the stage rules put sales calls) repeats the event
-- type's row and is left out.
CREATE VIEW IF NOT EXISTS painpoints AS
SELECT
    stage, channel, event_type, property, bucket, journeys_with, dropped_with,
    journeys_without, dropped_without, dropoff_with, dropoff_without, lift, lift_low,
    lift_high, difference, difference_low, difference_high, lift_within_type,
    lift_within_type_low, lift_within_type_high
FROM painpoint_stats
WHERE journeys_with >= 30 AND journeys_without >= 30 AND lift IS NOT NULL
  AND (property = '' OR type_journeys_without > 0)
ORDER BY lift DESC, journeys_with DESC, stage, channel, event_type, property, bucket;
