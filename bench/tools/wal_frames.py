#!/usr/bin/env python3
"""How many WAL frames (pages written to SQLite's log) a commit of one batch costs, for the
runtime's inbox and outbox keyed in different ways. Each commit's frames are read off the
growth of the -wal file. Python's sqlite3 only; run: python3 bench/tools/wal_frames.py

Inbox, batches of 38 and 11 entries, 60,000 messages occurring 1 ms apart and received with an
exponential delay (mean 128 ms, as with 256 sagas in flight):
  by_id         PRIMARY KEY (message_id), message ids are hashes, plus the received_at index
  by_occurrence PRIMARY KEY (occurred_at, message_id)
Inbox keyed by (saga_id, message_id), 20,000 sagas of 3 inputs, 256 and 2,048 in flight.
Outbox, batches of 38: rows keyed by id (WITHOUT ROWID) or in insertion order with a unique
index on the id; each commit first deletes the rows published since the last (32 or more).
"""

import hashlib
import os
import random
import sqlite3
import tempfile

FRAME = 4096 + 24


def fresh(directory, name, schema):
    path = os.path.join(directory, name + ".db")
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA wal_autocheckpoint=0")
    for statement in schema:
        db.execute(statement)
    return db, path


def frames(path):
    try:
        return (os.path.getsize(path + "-wal") - 32) // FRAME
    except FileNotFoundError:
        return 0


def commit_frames(db, path, statements):
    """Runs (sql, rows) pairs in one transaction; returns the frames the commit wrote."""
    before = frames(path)
    db.execute("BEGIN IMMEDIATE")
    for sql, rows in statements:
        db.executemany(sql, rows)
    db.execute("COMMIT")
    return frames(path) - before


def checkpoint(db, commits):
    if commits % 200 == 0:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def msg_id(n):
    return "m_" + hashlib.md5(str(n).encode()).hexdigest()


def inbox(directory, key, batch, messages=60_000):
    random.seed(1)
    if key == "by_id":
        schema = [
            "CREATE TABLE inbox (message_id TEXT PRIMARY KEY, subject TEXT NOT NULL, "
            "received_at BIGINT NOT NULL) WITHOUT ROWID",
            "CREATE INDEX inbox_received_at ON inbox (received_at)",
        ]
        sql = "INSERT INTO inbox VALUES (?, ?, ?)"
    else:
        schema = [
            "CREATE TABLE inbox (occurred_at BIGINT NOT NULL, message_id TEXT NOT NULL, "
            "subject TEXT NOT NULL, received_at BIGINT NOT NULL, "
            "PRIMARY KEY (occurred_at, message_id)) WITHOUT ROWID"
        ]
        sql = "INSERT INTO inbox VALUES (?, ?, ?, ?)"
    db, path = fresh(directory, f"inbox-{key}-{batch}", schema)
    arrivals = sorted(
        (t + random.expovariate(1 / 128), t, msg_id(t), f"evt.ride.requested.r_{t:020d}")
        for t in range(messages)
    )
    total = commits = 0
    for start in range(0, len(arrivals), batch):
        chunk = arrivals[start : start + batch]
        if key == "by_id":
            rows = [(i, s, int(a)) for a, _, i, s in chunk]
        else:
            rows = [(o, i, s, int(a)) for a, o, i, s in chunk]
        total += commit_frames(db, path, [(sql, rows)])
        commits += 1
        checkpoint(db, commits)
    return total / commits


def inbox_by_saga(directory, in_flight, batch=38, sagas=20_000, per_saga=3):
    random.seed(1)
    db, path = fresh(
        directory,
        f"inbox-saga-{in_flight}",
        [
            "CREATE TABLE inbox (saga_id TEXT NOT NULL, message_id TEXT NOT NULL, "
            "subject TEXT NOT NULL, received_at BIGINT NOT NULL, "
            "PRIMARY KEY (saga_id, message_id)) WITHOUT ROWID",
            "CREATE INDEX inbox_received_at ON inbox (received_at)",
        ],
    )
    sequence, started, active, pending = 10**9, 0, [], []
    total = commits = 0
    while started < sagas or active:
        while len(active) < in_flight and started < sagas:
            sequence += random.randint(33, 333)  # ids that grow, as nuid's do
            active.append([f"r_{sequence:020d}", per_saga])
            started += 1
        i = random.randrange(len(active))
        saga = active[i]
        pending.append((saga[0], msg_id(f"{saga[0]}/{saga[1]}"), "evt." + saga[0], commits))
        saga[1] -= 1
        if saga[1] == 0:
            active.pop(i)
        if len(pending) >= batch:
            total += commit_frames(db, path, [("INSERT INTO inbox VALUES (?, ?, ?, ?)", pending)])
            commits += 1
            pending = []
            checkpoint(db, commits)
    return total / commits


def outbox(directory, key, batch=38, commits=1_500, payload=650):
    random.seed(1)
    if key == "by_id":
        table = (
            "CREATE TABLE outbox (message_id TEXT PRIMARY KEY, cause_id TEXT, subject TEXT NOT "
            "NULL, payload BLOB NOT NULL, created_at BIGINT NOT NULL) WITHOUT ROWID"
        )
        insert = "INSERT INTO outbox VALUES (?, ?, ?, ?, ?)"
    else:
        table = (
            "CREATE TABLE outbox (seq INTEGER PRIMARY KEY, message_id TEXT NOT NULL UNIQUE, "
            "cause_id TEXT, subject TEXT NOT NULL, payload BLOB NOT NULL, "
            "created_at BIGINT NOT NULL)"
        )
        insert = (
            "INSERT INTO outbox (message_id, cause_id, subject, payload, created_at) "
            "VALUES (?, ?, ?, ?, ?)"
        )
    db, path = fresh(
        directory, f"outbox-{key}", [table, "CREATE INDEX outbox_cause ON outbox (cause_id)"]
    )
    published, total, n = [], 0, 0
    for b in range(commits):
        statements = []
        if len(published) >= 32:
            statements.append(("DELETE FROM outbox WHERE message_id = ?", published))
            published = []
        rows = []
        for _ in range(batch):
            n += 1
            body = os.urandom(payload // 2).hex().encode()
            rows.append((msg_id(f"o{n}"), msg_id(f"c{n}"), "evt.ride.confirmed.r_x", body, b))
        statements.append((insert, rows))
        total += commit_frames(db, path, statements)
        published += [(r[0],) for r in rows]
        checkpoint(db, b + 1)
    return total / commits


def main():
    with tempfile.TemporaryDirectory() as directory:
        for batch in (38, 11):
            print(
                f"inbox, batches of {batch}: by id {inbox(directory, 'by_id', batch):.1f}, "
                f"by occurrence {inbox(directory, 'by_occurrence', batch):.1f} frames per commit"
            )
        for in_flight in (256, 2048):
            print(
                f"inbox by saga, {in_flight} sagas in flight, batches of 38: "
                f"{inbox_by_saga(directory, in_flight):.1f} frames per commit"
            )
        print(
            f"outbox, batches of 38: by id {outbox(directory, 'by_id'):.1f}, in insertion "
            f"order {outbox(directory, 'ordered'):.1f} frames per commit"
        )


if __name__ == "__main__":
    main()
