"""``hallctl ingest --db postgresql://…``: central's copy of the halls' events in PostgreSQL,
shared by any number of stateless ingest workers.

Everything a worker would otherwise keep in memory is here, so any worker can carry on
from any other: the events (deduplicated on ``(hall, epoch, seq)``), each stream's
contiguous high-water mark (``streams``), the seqs received above it (``pending``), the
ranges a hall reported gone, the open gaps with when they were asked for (``gaps``: one
replay request per gap whichever worker sees it), the replay commands in flight
(``replays``), the replays a hall said it is sending (``answered``), each worker's drained
mark (``workers``: the gap sweep waits on them) and the last ack sent to each hall
(``acks``). Every SQL statement of the
PostgreSQL ingest is in this module.

Locking, so that workers never deadlock and never double-count:

- a batch is one transaction that only inserts: the events (sorted by key) and the seqs
  that arrived (``pending``); batches of different workers never wait on each other
  (except on the same duplicate);
- the marks' sweep (``advance``), the gap sweep and the ack sweep each run under a
  transaction-level advisory lock that only one worker holds at a time (the others skip
  that round); only the marks' sweep writes ``streams`` (and a hall's ``metrics``, rarely,
  its ``top``); the other two write only their own tables (``gaps``/``replays``, ``acks``).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

# Advisory lock keys (any bigint unique to this application): the migration, the gap
# sweep, the ack sweep, the creation of day partitions and the marks' sweep.
LOCK_MIGRATE = 0x4841_4C4C_0001
LOCK_GAPS = 0x4841_4C4C_0002
LOCK_ACKS = 0x4841_4C4C_0003
LOCK_PARTITIONS = 0x4841_4C4C_0004
LOCK_ADVANCE = 0x4841_4C4C_0005

# A worker's drained mark counts for the gap sweep while it was reported this recently.
BACKLOG_FRESH_S = 10.0

# Each entry is applied once, in order, in its own transaction; never edit one that has
# shipped, append another.
MIGRATIONS: tuple[str, ...] = (
    # 1: events by day, the streams' bookkeeping, the halls' directory.
    """
    CREATE TABLE events (
        hall text NOT NULL,
        epoch bigint NOT NULL,
        seq bigint NOT NULL,
        day date NOT NULL,
        id text NOT NULL,
        type text NOT NULL,
        at timestamptz NOT NULL,
        clock_ok boolean NOT NULL,
        data jsonb NOT NULL,
        received_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (hall, epoch, seq, day)
    ) PARTITION BY RANGE (day);
    COMMENT ON COLUMN events.day IS
        'the hall''s local date of at (at keeps the hall''s offset): the partition key';
    CREATE INDEX events_hall_day ON events (hall, day, at);
    CREATE INDEX events_type_day ON events (type, day, at);

    CREATE TABLE streams (
        hall text NOT NULL,
        epoch bigint NOT NULL,
        high_water bigint NOT NULL DEFAULT 0,
        top bigint NOT NULL DEFAULT 0,
        PRIMARY KEY (hall, epoch)
    );
    CREATE INDEX streams_open ON streams (hall, epoch) WHERE top > high_water;

    CREATE TABLE pending (
        hall text NOT NULL,
        epoch bigint NOT NULL,
        seq bigint NOT NULL,
        PRIMARY KEY (hall, epoch, seq)
    );

    CREATE TABLE gone (
        hall text NOT NULL,
        epoch bigint NOT NULL,
        start_seq bigint NOT NULL,
        end_seq bigint NOT NULL,
        noted_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (hall, epoch, start_seq, end_seq)
    );

    CREATE TABLE gaps (
        hall text NOT NULL,
        epoch bigint NOT NULL,
        start_seq bigint NOT NULL,
        end_seq bigint NOT NULL,
        noticed_at timestamptz NOT NULL,
        asked_at timestamptz,
        requests integer NOT NULL DEFAULT 0,
        PRIMARY KEY (hall, epoch, start_seq)
    );

    CREATE TABLE replays (
        cmd_id text PRIMARY KEY,
        hall text NOT NULL,
        epoch bigint NOT NULL,
        start_seq bigint NOT NULL,
        end_seq bigint NOT NULL,
        asked_at timestamptz NOT NULL DEFAULT now()
    );

    CREATE TABLE acks (
        hall text PRIMARY KEY,
        epoch bigint NOT NULL,
        seq bigint NOT NULL,
        acked_at timestamptz NOT NULL
    );

    CREATE TABLE halls (
        hall text PRIMARY KEY,
        district text,
        name text
    );
    COMMENT ON TABLE halls IS
        'central''s directory of halls (filled by central, not by ingest), for queries';
    """,
    # 2: adaptive acks — when each hall's mark first moved past its last ack.
    """
    ALTER TABLE acks ALTER COLUMN acked_at DROP NOT NULL;
    ALTER TABLE acks ADD COLUMN unacked_since timestamptz;
    COMMENT ON COLUMN acks.unacked_since IS
        'when the ack sweep first saw the hall''s mark past seq (null: nothing to ack)';
    COMMENT ON COLUMN acks.acked_at IS 'null: never acked (seq 0)';

    CREATE TABLE workers (
        client_id text PRIMARY KEY,
        backlog_s double precision NOT NULL,
        seen_at timestamptz NOT NULL
    );
    COMMENT ON TABLE workers IS
        'each ingest worker''s backlog: the time what it received will take to commit';
    """,
    # 3: replays on their way — each worker's drained mark, each answered replay.
    """
    ALTER TABLE workers ADD COLUMN drained_at timestamptz;
    COMMENT ON COLUMN workers.drained_at IS
        'every message this worker had received before this time is committed';

    CREATE TABLE answered (
        hall text NOT NULL,
        epoch bigint NOT NULL,
        start_seq bigint NOT NULL,
        end_seq bigint NOT NULL,
        answered_at timestamptz NOT NULL,
        PRIMARY KEY (hall, epoch, start_seq, end_seq)
    );
    COMMENT ON TABLE answered IS
        'replays the hall said it is re-sending (its reply came in at answered_at)';
    """,
)


@dataclass(frozen=True)
class Row:
    """One received event, ready for the events table."""

    hall: str
    epoch: int
    seq: int
    day: dt.date
    id: str
    type: str
    at: dt.datetime
    clock_ok: bool
    data: dict[str, Any]


@dataclass(frozen=True)
class Gap:
    hall: str
    epoch: int
    start: int
    end: int


@dataclass(frozen=True)
class Batch:
    """What one worker received in one go, applied in one transaction."""

    rows: Sequence[Row] = ()
    # (hall, epoch, start, end): seqs the hall evicted or no longer has.
    gone: Sequence[tuple[str, int, int, int]] = ()
    # (hall, epoch, last_seq): a drained outbox says everything up to last_seq was sent.
    announced: Sequence[tuple[str, int, int]] = ()


@dataclass(frozen=True)
class Applied:
    stored: int
    duplicates: int
    # (hall, epoch, seq) of the events stored for the first time by this batch.
    new: Sequence[tuple[str, int, int]] = ()


def _due(
    now: dt.datetime,
    *,
    since: dt.datetime,
    wait: float,
    last: dt.datetime,
    drained: dt.datetime | None,
    grace_s: float,
    fallback_s: float,
) -> bool:
    """Whether a gap no request in flight covers is to be asked for now (``due_gaps``).

    ``since``: its last request, or when it was noticed; ``wait``: its back-off. ``last``:
    the later of its last change and the answers on their way for it. ``drained``: the
    earliest drained mark of the workers seen lately (None: some worker has none yet).
    """
    if (now - since).total_seconds() < wait:
        return False
    if drained is not None and (drained - last).total_seconds() >= grace_s:
        return True  # whatever was on its way by ``last`` is committed
    return (now - last).total_seconds() >= fallback_s  # some queue never let it be known


def _partition(day: dt.date) -> str:
    return f"events_{day:%Y%m%d}"


class PgStore:
    """One worker's connection to central's database."""

    def __init__(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self.conn = conn
        self._days: set[dt.date] = set()

    @classmethod
    async def connect(cls, url: str) -> PgStore:
        conn = await psycopg.AsyncConnection.connect(url)
        return cls(conn)

    async def close(self) -> None:
        await self.conn.close()

    # -- schema ----------------------------------------------------------------------------

    async def migrate(self) -> int:
        """Apply the migrations this database lacks; returns its schema version."""
        async with self.conn.transaction():
            await self.conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_MIGRATE,))
            await self.conn.execute(
                "CREATE TABLE IF NOT EXISTS hallctl_migrations ("
                " version integer PRIMARY KEY,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            cursor = await self.conn.execute(
                "SELECT coalesce(max(version), 0) FROM hallctl_migrations"
            )
            row = await cursor.fetchone()
            version = int(row[0]) if row else 0
            if version > len(MIGRATIONS):
                raise RuntimeError(
                    f"the database is at schema version {version}, newer than this hallctl"
                    f" ({len(MIGRATIONS)}): upgrade hallctl"
                )
            for number, sql in enumerate(MIGRATIONS[version:], start=version + 1):
                await self.conn.execute(sql)  # constant DDL
                await self.conn.execute(
                    "INSERT INTO hallctl_migrations (version) VALUES (%s)", (number,)
                )
        return len(MIGRATIONS)

    async def ensure_days(self, days: Iterable[dt.date]) -> None:
        """A partition for each day (created once, whichever worker comes first)."""
        missing = sorted(set(days) - self._days)
        if not missing:
            return
        async with self.conn.transaction():
            await self.conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_PARTITIONS,))
            for day in missing:
                following = day + dt.timedelta(days=1)
                await self.conn.execute(
                    f"CREATE TABLE IF NOT EXISTS {_partition(day)} PARTITION OF events"
                    f" FOR VALUES FROM ('{day.isoformat()}') TO ('{following.isoformat()}')"
                )
        self._days.update(missing)

    # -- a batch ---------------------------------------------------------------------------

    async def apply(self, batch: Batch) -> Applied:
        """Store the events, note what arrived or is gone, move the touched marks."""
        rows = sorted(batch.rows, key=lambda r: (r.hall, r.epoch, r.seq))
        await self.ensure_days(r.day for r in rows)
        stored = 0
        new: list[tuple[str, int, int]] = []
        async with self.conn.transaction():
            if rows:
                cursor = await self.conn.execute(
                    "INSERT INTO events (hall, epoch, seq, day, id, type, at, clock_ok, data)"
                    " SELECT hall, epoch, seq, day, id, type, at, clock_ok, data::jsonb"
                    " FROM unnest(%s::text[], %s::bigint[], %s::bigint[], %s::date[],"
                    "  %s::text[], %s::text[], %s::timestamptz[], %s::boolean[], %s::text[])"
                    "  AS b(hall, epoch, seq, day, id, type, at, clock_ok, data)"
                    " ON CONFLICT DO NOTHING RETURNING hall, epoch, seq",
                    (
                        [r.hall for r in rows],
                        [r.epoch for r in rows],
                        [r.seq for r in rows],
                        [r.day for r in rows],
                        [r.id for r in rows],
                        [r.type for r in rows],
                        [r.at for r in rows],
                        [r.clock_ok for r in rows],
                        [json.dumps(r.data, ensure_ascii=False) for r in rows],
                    ),
                )
                new = sorted(await cursor.fetchall())
                stored = len(new)
                if new:
                    await self.conn.execute(
                        "INSERT INTO pending (hall, epoch, seq)"
                        " SELECT * FROM unnest(%s::text[], %s::bigint[], %s::bigint[])"
                        " ON CONFLICT DO NOTHING",
                        ([h for h, _, _ in new], [e for _, e, _ in new], [s for _, _, s in new]),
                    )
            for hall, epoch, start, end in sorted(batch.gone):
                await self.conn.execute(
                    "INSERT INTO gone (hall, epoch, start_seq, end_seq) VALUES (%s, %s, %s, %s)"
                    " ON CONFLICT DO NOTHING",
                    (hall, epoch, start, end),
                )
                await self.conn.execute(
                    "INSERT INTO pending (hall, epoch, seq)"
                    " SELECT %s, %s, s FROM generate_series(%s::bigint, %s::bigint) AS s"
                    " WHERE s > coalesce((SELECT high_water FROM streams"
                    "  WHERE hall = %s AND epoch = %s), 0)"
                    " ON CONFLICT DO NOTHING",
                    (hall, epoch, start, end, hall, epoch),
                )
            if batch.announced:
                tops: dict[tuple[str, int], int] = {}
                for hall, epoch, last in batch.announced:
                    tops[(hall, epoch)] = max(tops.get((hall, epoch), 0), last)
                keys = sorted(tops)
                await self.conn.execute(
                    "INSERT INTO streams (hall, epoch, top)"
                    " SELECT * FROM unnest(%s::text[], %s::bigint[], %s::bigint[])"
                    " ON CONFLICT (hall, epoch) DO UPDATE"
                    " SET top = greatest(streams.top, excluded.top)",
                    ([h for h, _ in keys], [e for _, e in keys], [tops[k] for k in keys]),
                )
        return Applied(stored=stored, duplicates=len(rows) - stored, new=new)

    async def advance(self) -> bool:
        """Move every stream's mark over the seqs now contiguous above it (and its top to
        the highest seq seen), then forget those seqs: ``pending`` only holds what is above
        a mark. One worker at a time (False: another holds it); batches never lock the
        ``streams`` rows, so workers do not wait on each other's marks."""
        async with self.conn.transaction():
            cursor = await self.conn.execute(
                "SELECT pg_try_advisory_xact_lock(%s)", (LOCK_ADVANCE,)
            )
            row = await cursor.fetchone()
            if row is None or not row[0]:
                return False
            await self.conn.execute(
                "INSERT INTO streams (hall, epoch, top)"
                " SELECT hall, epoch, max(seq) FROM pending GROUP BY hall, epoch"
                " ORDER BY hall, epoch"
                " ON CONFLICT (hall, epoch) DO UPDATE"
                " SET top = greatest(streams.top, excluded.top)"
            )
            await self.conn.execute(
                "WITH touched AS ("
                "  SELECT s.hall, s.epoch, s.high_water FROM streams s"
                "  WHERE EXISTS (SELECT 1 FROM pending p"
                "   WHERE p.hall = s.hall AND p.epoch = s.epoch AND p.seq = s.high_water + 1)),"
                " runs AS ("
                "  SELECT p.hall, p.epoch, p.seq,"
                "   p.seq - t.high_water"
                "   - row_number() OVER (PARTITION BY p.hall, p.epoch ORDER BY p.seq) AS off"
                "  FROM pending p JOIN touched t USING (hall, epoch) WHERE p.seq > t.high_water),"
                " moved AS ("
                "  SELECT hall, epoch, max(seq) AS high_water FROM runs WHERE off = 0"
                "  GROUP BY hall, epoch)"
                " UPDATE streams s SET high_water = moved.high_water,"
                "  top = greatest(s.top, moved.high_water)"
                " FROM moved WHERE s.hall = moved.hall AND s.epoch = moved.epoch"
            )
            await self.conn.execute(
                "DELETE FROM pending p USING streams s"
                " WHERE s.hall = p.hall AND s.epoch = p.epoch AND p.seq <= s.high_water"
            )
        return True

    async def note_backlog(
        self, client_id: str, backlog_s: float, drained_age_s: float | None = None
    ) -> None:
        """This worker's backlog and drained mark, for the gap sweep (whichever worker runs
        it): every message it had received ``drained_age_s`` ago or earlier is committed
        (None: nothing known yet; the mark stays where it was). The age, not the time,
        crosses the wire: the mark is in the database's clock, like the replies' times."""
        async with self.conn.transaction():
            await self.conn.execute(
                "INSERT INTO workers (client_id, backlog_s, seen_at, drained_at)"
                " VALUES (%s, %s, now(), now() - make_interval(secs => %s))"
                " ON CONFLICT (client_id) DO UPDATE"
                " SET backlog_s = excluded.backlog_s, seen_at = excluded.seen_at,"
                "  drained_at = coalesce(greatest(workers.drained_at, excluded.drained_at),"
                "   workers.drained_at)",
                (client_id, backlog_s, drained_age_s),
            )

    # -- replies to replay_events ----------------------------------------------------------

    async def take_replay(
        self, cmd_id: str, *, resending: bool = False, received_age_s: float = 0.0
    ) -> tuple[str, int, int, int] | None:
        """The replay request ``cmd_id`` answered, forgotten; None if not ours.

        ``resending``: the hall said it is re-sending some of the range. The range is then
        noted as on its way (``answered``), with the time the reply came in (``received_age_s``
        ago, in the database's clock): the gap sweep does not ask for it again until every
        worker's drained mark has passed that time (see ``due_gaps``)."""
        async with self.conn.transaction():
            cursor = await self.conn.execute(
                "DELETE FROM replays WHERE cmd_id = %s RETURNING hall, epoch, start_seq, end_seq",
                (cmd_id,),
            )
            row = await cursor.fetchone()
            if row is not None and resending:
                await self.conn.execute(
                    "INSERT INTO answered (hall, epoch, start_seq, end_seq, answered_at)"
                    " VALUES (%s, %s, %s, %s, now() - make_interval(secs => %s))"
                    " ON CONFLICT (hall, epoch, start_seq, end_seq)"
                    " DO UPDATE SET answered_at = greatest(answered.answered_at,"
                    "  excluded.answered_at)",
                    (row[0], row[1], row[2], row[3], max(0.0, received_age_s)),
                )
        if row is None:
            return None
        return str(row[0]), int(row[1]), int(row[2]), int(row[3])

    # -- the sweeps (one worker at a time) -------------------------------------------------

    async def due_gaps(
        self,
        *,
        timeout_s: float,
        max_wait_s: float,
        chunk: int,
        make_id: Any,
        unanswered_s: float = 0.0,
        fallback_s: float = 600.0,
    ) -> list[tuple[str, Gap]] | None:
        """The replay requests to send now, recorded as sent: ``[(cmd_id, gap)]``.

        None when another worker holds the sweep. Only each hall's current epoch is
        replayed. Every wait below ends on the workers' **drained marks**
        (``workers.drained_at``: every message a worker had received before its mark is
        committed): once every worker seen in the last ``BACKLOG_FRESH_S`` has a mark
        ``timeout_s`` past a time, whatever any hall had published by then is committed,
        whichever worker the broker gave it to; a mark that does not come (a worker stuck
        behind a queue that never empties) delays it to ``fallback_s`` only
        (docs/central-integration.md, "Replays: one request per gap", gives the argument).
        A gap is asked for:

        - first, once it stayed the same for ``timeout_s`` and every worker drained past
          the moment it was noticed (the missing seqs, published before the seq above
          them, would have come by then: during a catch-up they are in a worker's queue);
        - never while a request covering it is not answered, until that request is
          ``unanswered_s`` old (its expiry in the hall's session: the hall answers within
          it or never) and every worker drained past that expiry (the answer may sit
          behind thousands of events);
        - once the hall answered that it is re-sending (``answered``), only when every
          worker drained past the later of the answer and the gap's last change: what is
          still missing then was lost on its way;
        - again after an answer without events, after twice as long as the last time each
          time, up to ``max_wait_s``.
        """
        async with self.conn.transaction():
            cursor = await self.conn.execute(
                "SELECT pg_try_advisory_xact_lock(%s), now()", (LOCK_GAPS,)
            )
            row = await cursor.fetchone()
            if row is None or not row[0]:
                return None
            now: dt.datetime = row[1]
            # Read before the gaps: a batch a drained mark counts was committed before the
            # mark was written, so its events are in the gaps read next. Also the longest
            # queue of the workers seen lately, in seconds.
            drained = await self._drained(now)
            cursor = await self.conn.execute(
                "WITH cur AS ("
                "  SELECT DISTINCT ON (hall) hall, epoch, high_water, top FROM streams"
                "  ORDER BY hall, epoch DESC),"
                " open AS (SELECT * FROM cur WHERE top > high_water),"
                " have AS ("
                "  SELECT p.hall, p.epoch, p.seq FROM pending p JOIN open o USING (hall, epoch)"
                "  WHERE p.seq > o.high_water"
                "  UNION ALL SELECT hall, epoch, high_water FROM open"
                "  UNION ALL SELECT hall, epoch, top + 1 FROM open),"
                " spaced AS ("
                "  SELECT hall, epoch, seq,"
                "   lead(seq) OVER (PARTITION BY hall, epoch ORDER BY seq) AS next FROM have)"
                " SELECT hall, epoch, seq + 1, next - 1 FROM spaced WHERE next > seq + 1"
                " ORDER BY hall, epoch, seq"
            )
            current = [
                Gap(str(h), int(e), int(s), int(t)) for h, e, s, t in await cursor.fetchall()
            ]
            cursor = await self.conn.execute(
                "SELECT hall, epoch, start_seq, end_seq, noticed_at, asked_at, requests FROM gaps"
            )
            known = {(str(r[0]), int(r[1]), int(r[2])): r for r in await cursor.fetchall()}
            # The requests not answered, then the answers (take_replay moves a request
            # from one to the other in one transaction: read in this order, none is missed).
            cursor = await self.conn.execute(
                "SELECT hall, epoch, start_seq, end_seq, asked_at FROM replays"
            )
            unanswered: dict[tuple[str, int], list[tuple[int, int]]] = {}
            for h, e, a, b, asked in await cursor.fetchall():
                age = (now - asked).total_seconds()
                expired = asked + dt.timedelta(seconds=unanswered_s)
                if age < unanswered_s or not (
                    age >= fallback_s
                    or (drained is not None and (drained - expired).total_seconds() >= timeout_s)
                ):
                    unanswered.setdefault((str(h), int(e)), []).append((int(a), int(b)))
            answers = await self._answers()
            settled: set[tuple[str, int, int, int]] = set()  # every answer read
            covering_any: set[tuple[str, int, int, int]] = set()  # those a gap still needs
            asked_over: set[tuple[str, int, int, int]] = set()  # those a new request replaces
            keep: list[tuple[Any, ...]] = []
            asks: list[tuple[str, Gap]] = []
            for gap in current:
                covering = [
                    (a, b, at)
                    for a, b, at in answers.get((gap.hall, gap.epoch), ())
                    if a <= gap.end and gap.start <= b
                ]
                covering_any.update((gap.hall, gap.epoch, a, b) for a, b, _ in covering)
                old = known.get((gap.hall, gap.epoch, gap.start))
                if old is None or int(old[3]) != gap.end:
                    # New, or changed since (part of it arrived): quiet from now on.
                    requests = 0 if old is None else int(old[6])
                    keep.append((gap.hall, gap.epoch, gap.start, gap.end, now, None, requests))
                    continue
                noticed_at, asked_at, requests = old[4], old[5], int(old[6])
                pending = any(
                    a <= gap.end and gap.start <= b
                    for a, b in unanswered.get((gap.hall, gap.epoch), ())
                )
                due = not pending and _due(
                    now,
                    since=asked_at or noticed_at,
                    wait=min(timeout_s * 2 ** min(requests, 16), max(timeout_s, max_wait_s)),
                    last=max([noticed_at, *(at for _, _, at in covering)]),
                    drained=drained,
                    grace_s=timeout_s,
                    fallback_s=fallback_s,
                )
                if due:
                    end = min(gap.end, gap.start + chunk - 1)
                    asks.append((str(make_id()), Gap(gap.hall, gap.epoch, gap.start, end)))
                    keep.append(
                        (gap.hall, gap.epoch, gap.start, gap.end, noticed_at, now, requests + 1)
                    )
                    asked_over.update((gap.hall, gap.epoch, a, b) for a, b, _ in covering)
                else:
                    keep.append(tuple(old))
            # Answers no gap needs any more (everything came) or that a new request replaces.
            for (h, e), answered in answers.items():
                settled.update((h, e, a, b) for a, b, _ in answered)
            await self._forget_answers(settled - covering_any | asked_over)
            await self.conn.execute("DELETE FROM gaps")
            if keep:
                async with self.conn.cursor() as cur:
                    await cur.executemany(
                        "INSERT INTO gaps"
                        " (hall, epoch, start_seq, end_seq, noticed_at, asked_at, requests)"
                        " VALUES (%s, %s, %s, %s, %s, %s, %s)",
                        keep,
                    )
            if asks:
                async with self.conn.cursor() as cur:
                    await cur.executemany(
                        "INSERT INTO replays (cmd_id, hall, epoch, start_seq, end_seq)"
                        " VALUES (%s, %s, %s, %s, %s)",
                        [(c, g.hall, g.epoch, g.start, g.end) for c, g in asks],
                    )
            # Requests a hall never answered (offline past their expiry) are asked again
            # through the gap; their records need not stay.
            await self.conn.execute(
                "DELETE FROM replays WHERE asked_at < now() - interval '1 hour'"
            )
        return asks

    async def _drained(self, now: dt.datetime) -> dt.datetime | None:
        """The earliest drained mark of the workers seen lately: None if one of them has
        none yet, ``now`` if none was seen (nothing is queued anywhere)."""
        cursor = await self.conn.execute(
            "SELECT min(drained_at), bool_and(drained_at IS NOT NULL), count(*) FROM workers"
            " WHERE seen_at > now() - make_interval(secs => %s)",
            (BACKLOG_FRESH_S,),
        )
        row = await cursor.fetchone()
        if row is None or not row[2]:
            return now
        return row[0] if row[1] else None

    async def _answers(self) -> dict[tuple[str, int], list[tuple[int, int, dt.datetime]]]:
        cursor = await self.conn.execute(
            "SELECT hall, epoch, start_seq, end_seq, answered_at FROM answered"
        )
        answers: dict[tuple[str, int], list[tuple[int, int, dt.datetime]]] = {}
        for h, e, a, b, at in await cursor.fetchall():
            answers.setdefault((str(h), int(e)), []).append((int(a), int(b), at))
        return answers

    async def _forget_answers(self, answers: set[tuple[str, int, int, int]]) -> None:
        if answers:
            async with self.conn.cursor() as cur:
                await cur.executemany(
                    "DELETE FROM answered"
                    " WHERE hall = %s AND epoch = %s AND start_seq = %s AND end_seq = %s",
                    sorted(answers),
                )

    async def ack_sweep(
        self,
        send: Callable[[list[tuple[str, int, int]]], Awaitable[None]],
        *,
        interval_s: float,
        events: int = 1,
        age_s: float = 0.0,
    ) -> list[tuple[str, int, int]] | None:
        """Ack each hall whose contiguous mark moved past its last ack by ``events`` or
        more, or first did so ``age_s`` or more ago (whichever comes first), and that was
        not acked in the last ``interval_s``: ``send`` publishes ``[(hall, epoch, seq)]``,
        then they are recorded. ``events=1`` acks every mark that moved. A new epoch is
        acked at once. None when another worker holds the ack sweep."""
        async with self.conn.transaction():
            cursor = await self.conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (LOCK_ACKS,))
            row = await cursor.fetchone()
            if row is None or not row[0]:
                return None
            current = (
                "WITH cur AS ("
                "  SELECT DISTINCT ON (hall) hall, epoch, high_water FROM streams"
                "  WHERE high_water > 0 ORDER BY hall, epoch DESC)"
            )
            # Halls never acked get a row (seq 0); a mark seen past the last ack for the
            # first time starts the age clock.
            await self.conn.execute(
                f"{current} INSERT INTO acks (hall, epoch, seq, acked_at, unacked_since)"
                " SELECT c.hall, c.epoch, 0, NULL, now() FROM cur c"
                " WHERE NOT EXISTS (SELECT 1 FROM acks a WHERE a.hall = c.hall)"
                " ORDER BY c.hall ON CONFLICT (hall) DO NOTHING"
            )
            await self.conn.execute(
                f"{current} UPDATE acks a SET unacked_since = now() FROM cur c"
                " WHERE a.hall = c.hall AND a.unacked_since IS NULL"
                " AND (a.epoch, a.seq) <> (c.epoch, c.high_water)"
            )
            cursor = await self.conn.execute(
                f"{current} SELECT c.hall, c.epoch, c.high_water"
                " FROM cur c JOIN acks a USING (hall)"
                " WHERE (a.epoch, a.seq) <> (c.epoch, c.high_water)"
                " AND (a.acked_at IS NULL OR a.acked_at <= now() - make_interval(secs => %s))"
                " AND (a.epoch <> c.epoch OR c.high_water - a.seq >= %s"
                "  OR a.unacked_since <= now() - make_interval(secs => %s))"
                " ORDER BY c.hall",
                (interval_s, events, age_s),
            )
            due = [(str(h), int(e), int(s)) for h, e, s in await cursor.fetchall()]
            if not due:
                return due
            await send(due)
            await self.conn.execute(
                "UPDATE acks SET epoch = d.e, seq = d.s, acked_at = now(), unacked_since = NULL"
                " FROM unnest(%s::text[], %s::bigint[], %s::bigint[]) AS d(h, e, s)"
                " WHERE acks.hall = d.h",
                ([h for h, _, _ in due], [e for _, e, _ in due], [s for _, _, s in due]),
            )
        return due

    # -- reading ---------------------------------------------------------------------------

    async def marks(self) -> dict[str, tuple[int, int]]:
        """Each hall's current ``(epoch, high_water)``."""
        cursor = await self.conn.execute(
            "SELECT DISTINCT ON (hall) hall, epoch, high_water FROM streams"
            " ORDER BY hall, epoch DESC"
        )
        return {str(h): (int(e), int(s)) for h, e, s in await cursor.fetchall()}
