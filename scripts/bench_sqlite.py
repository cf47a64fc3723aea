#!/usr/bin/env python3
"""The plain SQLite client of `make bench`: python3's sqlite3 module running
the statements the service sent (captured from its log with
LOG_FILTER=sqlx::query=trace), one call at a time on one connection, in WAL
mode with the service's pragmas. A call whose statements the service sent
between BEGIN IMMEDIATE and COMMIT (a keyed create; an update that found
its row changed) would run in such a transaction here too; statements it
sent alone (a plain Create's INSERT; Update's read, then its UPDATE over
the version read) run in autocommit.

Usage: bench_sqlite.py seed DB ROWS
       bench_sqlite.py run DB OP CAPTURED_LOG SECONDS WORKSPACE CUSTOMER
`seed` copies the one conversation in DB to ROWS rows with ids md5(n);
`run` prints {"op", "calls", "ops_per_s"} as JSON.
"""
import hashlib
import json
import re
import sqlite3
import sys
import time
import uuid


def connect(path):
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = NORMAL")
    db.execute("PRAGMA foreign_keys = ON")
    db.execute("PRAGMA busy_timeout = 30000")
    return db


def seeded(n):
    return hashlib.md5(str(n).encode()).digest()


def seed(path, rows):
    db = connect(path)
    db.row_factory = sqlite3.Row
    template = dict(db.execute("SELECT * FROM conversations LIMIT 1").fetchone())
    columns = list(template)
    db.execute("BEGIN")
    db.executemany(
        f"INSERT INTO conversations ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
        ([seeded(n) if c == "id" else template[c] for c in columns] for n in range(1, rows + 1)),
    )
    db.execute("COMMIT")


def statements(log_path):
    """The captured statements of one call, background work left out, and
    whether the service ran them in a transaction. One log line is one
    exchange with the driver, which may hold several statements (SQLite's
    writer takes `BEGIN IMMEDIATE; SELECT ...` at once in a transaction);
    here each runs on its own, as a plain client sends them."""
    out, transaction = [], False
    for line in open(log_path, encoding="utf-8", errors="replace"):
        # sqlx logs a long statement in full, a short one as its summary.
        m = re.search(r'db\.statement="(.*?)" rows_affected', line)
        text = m.group(1).encode().decode("unicode_escape").strip() if m else ""
        if not text:
            m = re.search(r'summary="(.*?)"', line)
            text = m.group(1) if m else ""
        # Every value is bound, so a `;` only separates two statements.
        for sql in (part.strip() for part in text.split(";")):
            if sql.startswith("BEGIN"):
                transaction = True
            elif re.search(r'"(conversations|customers|users|agents)"', sql):
                out.append(sql)
    return out, transaction


def params(sql, values, read=None):
    """A value for each `?`, by the column it is compared with or inserted
    into; in an UPDATE's condition, `read` (the row read before it) gives
    the version it writes over."""
    if sql.upper().startswith("INSERT"):
        # INSERT INTO t (cols) VALUES (...), or INSERT INTO t (cols) SELECT
        # ... WHERE EXISTS (customer id, workspace id): the create's form.
        columns = re.search(r'INSERT INTO "\w+" \(([^)]*)\)', sql).group(1)
        found = [values[c.strip().strip('"')] for c in columns.split(",")]
        if "EXISTS" in sql:
            found += [values["customer_id"], values["workspace_id"]]
        if len(found) != sql.count("?"):
            raise SystemExit(f"cannot map the parameters of: {sql[:120]}")
        return found
    found, where = [], sql.upper().find(" WHERE ")
    for m in re.finditer(r'"(\w+)"\s*(?:=|<>|<|>|<=|>=)\s*\?|(LIMIT)\s*\?', sql):
        if m.group(2):
            found.append(values["__limit"])
        elif read is not None and m.group(1) == "version" and m.start() > where:
            found.append(read["version"])
        else:
            found.append(values[m.group(1)])
    if len(found) != sql.count("?"):
        raise SystemExit(f"cannot map the parameters of: {sql[:120]}")
    return found


def run(path, op, log_path, seconds, workspace, customer):
    calls, transaction = statements(log_path)
    if not calls:
        raise SystemExit(f"{op}: no statements captured")
    # A captured write that changed nothing sends no UPDATE: the plain client
    # would then be timed on a read.
    verb = {"update": "UPDATE", "create": "INSERT"}.get(op)
    if verb and not any(sql.upper().startswith(verb) for sql in calls):
        raise SystemExit(f"{op}: the captured call sent no {verb}: {calls}")
    db = connect(path)
    db.row_factory = sqlite3.Row
    template = dict(db.execute("SELECT * FROM conversations LIMIT 1").fetchone())
    ws, cust = uuid.UUID(workspace).bytes, uuid.UUID(customer).bytes
    rows = db.execute("SELECT COUNT(*) FROM conversations").fetchone()[0]
    n, deadline = 0, time.monotonic() + seconds
    started = time.monotonic()
    while time.monotonic() < deadline:
        n += 1
        now = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + ".000000+00:00"
        values = dict(template)
        values.update({"workspace_id": ws, "__limit": 1, "updated_at": now, "version": n + 1})
        if op == "get":
            values["id"] = seeded(1 + n % rows)
        elif op == "update":
            values.update({"id": seeded(1), "subject": f"bench {n}", "priority": ("low", "normal", "high", "urgent")[n % 4]})
        elif op == "create":
            values.update({"id": uuid.uuid4().bytes, "subject": f"bench {n}", "created_at": now})
            values["customer_id"] = cust
        if transaction:
            db.execute("BEGIN IMMEDIATE")
        read = None
        for sql in calls:
            if sql.startswith("SELECT COUNT(*)") and '"customers"' in sql:
                db.execute(sql, [cust, ws]).fetchall()
            elif sql.upper().startswith("SELECT"):
                found = db.execute(sql, params(sql, values)).fetchall()
                read = found[0] if found else None
            else:
                if read is not None and sql.upper().startswith("UPDATE"):
                    # Over the version read, as the service writes.
                    values["version"] = read["version"] + 1
                db.execute(sql, params(sql, values, read)).fetchall()
        if transaction:
            db.execute("COMMIT")
    elapsed = time.monotonic() - started
    print(json.dumps({"op": op, "calls": n, "ops_per_s": round(n / elapsed, 1), "statements": len(calls), "transaction": transaction}))


if __name__ == "__main__":
    if sys.argv[1] == "seed":
        seed(sys.argv[2], int(sys.argv[3]))
    else:
        run(sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5]), sys.argv[6], sys.argv[7])
