-- Sample queries on the scale-out ingest's PostgreSQL database (hallctl ingest --db
-- postgresql://...; schema in hallctl/pgstore.py). `events` is partitioned by `day`, the
-- hall's local date of `at`: filter on `day` and PostgreSQL reads only those partitions.
-- `halls` is central's own directory (hall id -> district, name): fill it from your
-- registry; ingest never writes it.

-- 好差评 per district per day: every rating.submitted event (levels 1-5; 好评 5, 4, 3 and
-- 差评 2, 1, as the halls' reports count them), for the last 7 days.
SELECT e.day,
       coalesce(h.district, '(unknown)')                    AS district,
       count(*)                                             AS ratings,
       count(*) FILTER (WHERE (e.data->>'level')::int >= 3) AS good,
       count(*) FILTER (WHERE (e.data->>'bad')::boolean)    AS bad,
       round(avg((e.data->>'level')::numeric), 2)           AS mean_level
FROM events e
LEFT JOIN halls h USING (hall)
WHERE e.type = 'rating.submitted'
  AND e.day >= current_date - 7
GROUP BY e.day, district
ORDER BY e.day, district;

-- The same from the halls' own closing figures (report.daily, one per hall and closed
-- day), which also count ratings that were defaulted.
SELECT e.day,
       coalesce(h.district, '(unknown)')                                AS district,
       sum((e.data->'hall'->'ratings'->>'count')::int)                  AS ratings,
       sum((e.data->'hall'->'ratings'->>'good')::int)                   AS good,
       sum((e.data->'hall'->'ratings'->>'bad')::int)                    AS bad
FROM events e
LEFT JOIN halls h USING (hall)
WHERE e.type = 'report.daily'
  AND e.day >= current_date - 7
GROUP BY e.day, district
ORDER BY e.day, district;

-- Waiting time per hall for a day, from report.daily (minutes: mean, median, p90).
SELECT e.hall,
       h.name,
       (e.data->'hall'->>'served')::int                     AS served,
       (e.data->'hall'->'wait_minutes'->>'mean')::numeric   AS wait_mean,
       (e.data->'hall'->'wait_minutes'->>'median')::numeric AS wait_median,
       (e.data->'hall'->'wait_minutes'->>'p90')::numeric    AS wait_p90
FROM events e
LEFT JOIN halls h USING (hall)
WHERE e.type = 'report.daily'
  AND e.day = current_date - 1
ORDER BY wait_p90 DESC NULLS LAST;

-- Waiting time per hall today, live: each ticket's first call minus its issue.
WITH issued AS (
    SELECT hall, data->>'ticket_id' AS ticket_id, min(at) AS at
    FROM events WHERE type = 'ticket.issued' AND day = current_date
    GROUP BY 1, 2
), called AS (
    SELECT hall, data->>'ticket_id' AS ticket_id, min(at) AS at
    FROM events WHERE type = 'ticket.called' AND day = current_date
    GROUP BY 1, 2
)
SELECT i.hall,
       count(*)                                                               AS called,
       round(avg(extract(epoch FROM c.at - i.at)) / 60, 1)                    AS wait_mean_min,
       round((percentile_cont(0.9) WITHIN GROUP
              (ORDER BY extract(epoch FROM c.at - i.at)) / 60)::numeric, 1)   AS wait_p90_min
FROM issued i JOIN called c USING (hall, ticket_id)
GROUP BY i.hall
ORDER BY wait_p90_min DESC;

-- A hall's day, in order (served by the (hall, day, at) index).
SELECT seq, at, type, data FROM events
WHERE hall = 'hd-zgc-001' AND day = current_date ORDER BY at, seq;

-- Where ingest stands: each hall's current epoch, contiguous mark, what is open above it,
-- and the last ack sent.
SELECT s.hall, s.epoch, s.high_water, s.top, a.seq AS acked, a.acked_at
FROM (SELECT DISTINCT ON (hall) * FROM streams ORDER BY hall, epoch DESC) s
LEFT JOIN acks a USING (hall)
ORDER BY s.top - s.high_water DESC, s.hall;
