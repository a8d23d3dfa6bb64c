-- SQL for product teams: stable views over the pipeline's tables (docs/sql.md defines every
-- column and shows example queries: funnels, paths, attribution, retention).
-- Every view here reads current identity (touchpoints_current.current_customer_id), so a
-- customer merged after the fact is counted once; `customer_id` in these views is always the
-- current customer. Views only: dropping and re-creating them never touches stored data.

-- The shipped stage model (pipeline/config/stages.toml): funnel order and drop-off timeouts.
-- A unit test keeps it equal to the TOML file.
CREATE VIEW IF NOT EXISTS stage_timeouts AS
SELECT stage, stage_rank, timeout_seconds
FROM values(
    'stage String, stage_rank UInt8, timeout_seconds Nullable(UInt32)',
    ('awareness', 1, 604800),
    ('consideration', 2, 259200),
    ('purchase', 3, 1800),
    ('retention', 4, 2592000),
    ('advocacy', 5, NULL)
);

-- Every touchpoint (FINAL) with its current customer and the current journey it falls in.
CREATE VIEW IF NOT EXISTS journey_touchpoints AS
SELECT
    t.event_id AS event_id,
    t.occurred_at AS occurred_at,
    t.channel AS channel,
    t.event_type AS event_type,
    t.known_type AS known_type,
    t.stage AS stage,
    t.customer_id AS customer_id,
    t.current_customer_id AS current_customer_id,
    t.journey_id AS journey_id,
    j.journey_id AS current_journey_id,
    t.campaign AS campaign,
    t.revenue AS revenue,
    t.currency AS currency,
    t.order_id AS order_id,
    t.conversation_id AS conversation_id,
    t.call_id AS call_id,
    t.topic AS topic,
    t.wait_seconds AS wait_seconds,
    t.duration_seconds AS duration_seconds,
    t.outcome AS outcome,
    t.csat AS csat,
    t.nps AS nps,
    t.properties AS properties
FROM touchpoints_current AS t
ASOF LEFT JOIN (
    SELECT customer_id, journey_id, started_at FROM journeys FINAL WHERE is_deleted = 0
) AS j
    ON j.customer_id = t.current_customer_id AND t.occurred_at >= j.started_at;

-- One row per web purchase, numbered per current customer.
CREATE VIEW IF NOT EXISTS purchases AS
SELECT
    event_id,
    order_id,
    current_customer_id AS customer_id,
    occurred_at AS purchased_at,
    ifNull(revenue, 0) AS revenue,
    currency,
    toUInt32(row_number() OVER by_customer) AS purchase_number,
    lagInFrame(toNullable(occurred_at)) OVER by_customer AS previous_purchase_at
FROM touchpoints_current
WHERE channel = 'web' AND event_type = 'purchase'
WINDOW by_customer AS (
    PARTITION BY current_customer_id ORDER BY occurred_at, event_id
    ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING
);

-- The touches attribution credits: interactions that reach or bring in a customer.
CREATE VIEW IF NOT EXISTS attribution_touches AS
SELECT
    event_id,
    current_customer_id AS customer_id,
    occurred_at,
    channel,
    event_type,
    campaign
FROM touchpoints_current
WHERE (channel = 'web' AND event_type IN ('ad_click', 'page_view'))
   OR (channel = 'email' AND event_type IN ('email_opened', 'email_clicked')
       AND JSONExtractString(properties, 'kind') != 'transactional')
   OR (channel = 'chat' AND event_type = 'chat_started')
   OR (channel = 'call_center' AND event_type = 'call_started');

-- Each purchase with the touches on its path (the customer's touches after the previous
-- purchase and at most 30 days before this one), each touch's credit under four models.
-- A purchase without any touch has one row with an empty touch (channel '', credit 1).
CREATE VIEW IF NOT EXISTS purchase_touches AS
SELECT
    purchase_event_id, order_id, customer_id, purchased_at, revenue, currency, purchase_number,
    touch_event_id, touched_at, channel, event_type, campaign,
    if(touch_event_id = '', toUInt32(0), toUInt32(row_number() OVER by_purchase)) AS touch_index,
    if(touch_event_id = '', toUInt32(0), toUInt32(count() OVER by_purchase)) AS touch_count,
    if(touch_event_id = '', NULL,
       dateDiff('millisecond', touched_at, purchased_at) / 1000) AS seconds_before_purchase,
    toFloat64(touch_count <= 1 OR touch_index = 1) AS first_touch,
    toFloat64(touch_count <= 1 OR touch_index = touch_count) AS last_touch,
    if(touch_count <= 1, 1, 1 / touch_count) AS linear,
    multiIf(
        touch_count <= 1, 1,
        touch_count = 2, 0.5,
        touch_index = 1 OR touch_index = touch_count, 0.4,
        0.2 / (touch_count - 2)
    ) AS position_based
FROM (
    SELECT
        p.event_id AS purchase_event_id,
        p.order_id AS order_id,
        p.customer_id AS customer_id,
        p.purchased_at AS purchased_at,
        p.revenue AS revenue,
        p.currency AS currency,
        p.purchase_number AS purchase_number,
        t.event_id AS touch_event_id,
        t.occurred_at AS touched_at,
        t.channel AS channel,
        t.event_type AS event_type,
        t.campaign AS campaign
    FROM purchases AS p
    LEFT JOIN attribution_touches AS t
        ON t.customer_id = p.customer_id
        AND t.occurred_at < p.purchased_at
        AND t.occurred_at >= p.purchased_at - INTERVAL 30 DAY
        AND t.occurred_at > ifNull(p.previous_purchase_at, toDateTime64(0, 3, 'UTC'))
)
WINDOW by_purchase AS (
    PARTITION BY purchase_event_id ORDER BY touched_at, touch_event_id
    ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING
);

-- The same with time-decay credit: a touch's weight halves every half_life_hours before the
-- purchase. Parameterized: SELECT * FROM purchase_touches_time_decay(half_life_hours = 168).
CREATE VIEW IF NOT EXISTS purchase_touches_time_decay AS
SELECT
    * EXCEPT (decay),
    if(touch_count = 0, 1, assumeNotNull(decay / sum(decay) OVER (PARTITION BY purchase_event_id)))
        AS time_decay
FROM (
    SELECT
        *,
        exp2(-(seconds_before_purchase - min(seconds_before_purchase)
            OVER (PARTITION BY purchase_event_id)) / ({half_life_hours:Float64} * 3600)) AS decay
    FROM purchase_touches
);

-- Purchases and revenue credited to each channel and campaign under the five models
-- (time decay with a 7-day half-life; other half-lives: purchase_touches_time_decay).
CREATE VIEW IF NOT EXISTS attribution AS
SELECT
    model,
    channel,
    campaign,
    sum(credit) AS purchases,
    sum(credit * revenue) AS revenue
FROM purchase_touches_time_decay(half_life_hours = 168)
ARRAY JOIN
    ['first_touch', 'last_touch', 'linear', 'position_based', 'time_decay'] AS model,
    [first_touch, last_touch, linear, position_based, time_decay] AS credit
GROUP BY model, channel, campaign;

-- One row per current journey: its outcome (purchased, dropped off, open) and the paths
-- that led there: the stages entered in order, and the touchpoints (channel:event_type)
-- before the journey's first purchase or up to its drop-off. Drop-off as in the stage model
-- and the pain-point views: the current stage is not completed and its timeout elapsed
-- before the watermark (the newest event time stored, capped at the server clock).
CREATE VIEW IF NOT EXISTS journey_paths AS
SELECT
    j.customer_id AS customer_id,
    j.journey_id AS journey_id,
    j.started_at AS started_at,
    j.last_seen AS last_seen,
    j.current_stage AS current_stage,
    if(e.journey_id = '', NULL, e.entered_at) AS entered_current_at,
    toBool(has(j.completed, 'purchase')) AS purchased,
    toBool(j.current_stage != '' AND e.journey_id != ''
        AND NOT has(j.completed, j.current_stage) AND s.timeout_seconds IS NOT NULL
        AND e.entered_at + toIntervalSecond(assumeNotNull(s.timeout_seconds)) < w.watermark)
        AS dropped_off,
    if(dropped_off, j.current_stage, '') AS dropped_off_stage,
    if(dropped_off, e.entered_at + toIntervalSecond(assumeNotNull(s.timeout_seconds)), NULL)
        AS dropped_off_at,
    multiIf(purchased, 'purchased', dropped_off, 'dropped_off', 'open') AS outcome,
    w.watermark AS watermark,
    ev.first_purchase_at AS first_purchase_at,
    if(purchased, arraySlice(st.path, 1, indexOf(st.path, 'purchase')), st.path) AS stage_path,
    arrayMap(x -> x.3, arrayFilter(
        x -> x.1 < ifNull(ev.first_purchase_at, toDateTime64('2299-12-31', 3, 'UTC'))
            AND x.1 <= ifNull(dropped_off_at, toDateTime64('2299-12-31', 3, 'UTC')),
        ev.events)) AS steps,
    arrayFilter((x, i) -> i = 1 OR x != steps[i - 1], steps, arrayEnumerate(steps))
        AS touch_path,
    length(steps) AS touchpoints
FROM journeys AS j FINAL
LEFT JOIN (
    SELECT customer_id, journey_id, to_stage, at AS entered_at
    FROM stage_transitions FINAL
    WHERE is_deleted = 0
) AS e ON e.customer_id = j.customer_id AND e.journey_id = j.journey_id
    AND e.to_stage = j.current_stage
LEFT JOIN stage_timeouts AS s ON s.stage = j.current_stage
CROSS JOIN (SELECT least(max(occurred_at), now64(3)) AS watermark FROM touchpoints) AS w
LEFT JOIN (
    SELECT
        customer_id,
        journey_id,
        arrayMap(x -> x.2, arraySort(groupArray((at, to_stage)))) AS path
    FROM stage_transitions FINAL
    WHERE is_deleted = 0
    GROUP BY customer_id, journey_id
) AS st ON st.customer_id = j.customer_id AND st.journey_id = j.journey_id
LEFT JOIN (
    SELECT
        current_customer_id AS customer_id,
        current_journey_id AS journey_id,
        arraySort(x -> (x.1, x.2), groupArrayIf(
            (occurred_at, event_id, concat(channel, ':', event_type)),
            event_type NOT IN ('email_sent', 'email_delivered')
        )) AS events,
        minIf(toNullable(occurred_at), channel = 'web' AND event_type = 'purchase')
            AS first_purchase_at
    FROM journey_touchpoints
    GROUP BY customer_id, journey_id
) AS ev ON ev.customer_id = j.customer_id AND ev.journey_id = j.journey_id
WHERE j.is_deleted = 0
    AND j.customer_id NOT IN (
        SELECT customer_id FROM identity_overrides FINAL WHERE is_deleted = 0
    );

-- The most frequent paths before a purchase and before a drop-off: stages, and the last
-- five touchpoint steps. `share` is the fraction of that outcome's journeys.
CREATE VIEW IF NOT EXISTS top_stage_paths AS
SELECT
    outcome,
    arrayStringConcat(stage_path, ' > ') AS path,
    count() AS journeys,
    count() / sum(count()) OVER (PARTITION BY outcome) AS share
FROM journey_paths
WHERE outcome IN ('purchased', 'dropped_off')
GROUP BY outcome, path;

CREATE VIEW IF NOT EXISTS top_touch_paths AS
SELECT
    outcome,
    arrayStringConcat(arraySlice(touch_path, -5), ' > ') AS path,
    count() AS journeys,
    count() / sum(count()) OVER (PARTITION BY outcome) AS share
FROM journey_paths
WHERE outcome IN ('purchased', 'dropped_off')
GROUP BY outcome, path;

-- Retention by cohort: customers by the week (Monday, UTC) of their first purchase, and how
-- many of them were active (any touchpoint) and bought again in each later week.
CREATE VIEW IF NOT EXISTS retention_cohorts AS
SELECT
    f.cohort_week AS cohort_week,
    toUInt32(intDiv(dateDiff('day', f.cohort_week, a.week), 7)) AS week_number,
    any(c.customers) AS cohort_customers,
    uniqExact(a.customer_id) AS active_customers,
    uniqExactIf(a.customer_id, a.purchases > 0) AS buying_customers,
    sum(a.purchases) AS purchases,
    sum(a.revenue) AS revenue,
    active_customers / cohort_customers AS retention_rate
FROM (
    SELECT customer_id, toMonday(min(purchased_at)) AS cohort_week
    FROM purchases
    GROUP BY customer_id
) AS f
INNER JOIN (
    SELECT
        current_customer_id AS customer_id,
        toMonday(occurred_at) AS week,
        countIf(channel = 'web' AND event_type = 'purchase') AS purchases,
        sumIf(ifNull(revenue, 0), channel = 'web' AND event_type = 'purchase') AS revenue
    FROM touchpoints_current
    GROUP BY customer_id, week
) AS a ON a.customer_id = f.customer_id
INNER JOIN (
    SELECT cohort_week, count() AS customers
    FROM (SELECT customer_id, toMonday(min(purchased_at)) AS cohort_week FROM purchases GROUP BY customer_id)
    GROUP BY cohort_week
) AS c ON c.cohort_week = f.cohort_week
WHERE a.week >= f.cohort_week
GROUP BY cohort_week, week_number;
