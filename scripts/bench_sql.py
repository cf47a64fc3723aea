#!/usr/bin/env python3
"""Turns the statements the service sent (PostgreSQL's log with
log_statement=all) into one pgbench script per operation.

Input: the log segment of the capture run, in which `SELECT 'bench-op:NAME'`
marks where each operation's calls begin. Statements of background work
(the token reload, health pings) are left out. Each operation's last
complete call (BEGIN to COMMIT, or its one statement) becomes the script:
the first ones may be the load generator's setup (reading an etag, walking
to page 1,000). Parameters are inlined as literals except those that must
vary per call:
the row id of Get (a random seeded row: md5(n)), the caller's own row in
Update (md5(client_id + 1)), and the new id of Create (gen_random_uuid()).
An update is a read, then an UPDATE over the version read: the read's
columns are kept with \gset, and the UPDATE writes over r_version, as the
service does with the version it read.

Usage: bench_sql.py LOG_SEGMENT OUT_DIR ROWS WORKSPACE_ID
Prints a JSON summary: per operation, the statements (with $n placeholders).
"""
import json
import re
import sys
import hashlib

log_path, out_dir, rows, workspace = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]


def seeded(n):
    d = hashlib.md5(str(n).encode()).hexdigest()
    return f"{d[0:8]}-{d[8:12]}-{d[12:16]}-{d[16:20]}-{d[20:32]}"


# LOG:  execute sqlx_s_3: SELECT ...   /  LOG:  statement: BEGIN
stmt_re = re.compile(r"LOG:\s+(?:execute [^:]+|statement):\s(.*)$")
detail_re = re.compile(r"DETAIL:\s+[Pp]arameters:\s(.*)$")
param_re = re.compile(r"\$(\d+) = (NULL|'(?:[^']|'')*')")

calls = {}  # op -> list of (sql, params)
op = None
lines = open(log_path, encoding="utf-8", errors="replace").read().splitlines()
for i, line in enumerate(lines):
    m = stmt_re.search(line)
    if not m:
        continue
    sql = m.group(1).strip()
    marker = re.match(r"SELECT 'bench-op:(\w+)'", sql)
    if marker:
        op = marker.group(1)
        calls[op] = []
        continue
    if op is None:
        continue
    # Only the operation's own work: its tables and its transaction.
    if sql.upper() not in ("BEGIN", "COMMIT", "ROLLBACK") and not re.search(r'"(conversations|customers|users|agents)"', sql):
        continue
    params = {}
    if i + 1 < len(lines):
        d = detail_re.search(lines[i + 1])
        if d:
            for number, value in param_re.findall(d.group(1)):
                params[int(number)] = value
    calls[op].append((sql, params))


def last_call(statements):
    """Statements of the last whole call: BEGIN..COMMIT, or a lone statement."""
    calls, current = [], []
    for sql, params in statements:
        upper = sql.upper()
        if upper == "BEGIN":
            current = [(sql, params)]
        elif current:
            current.append((sql, params))
            if upper in ("COMMIT", "ROLLBACK"):
                calls.append(current)
                current = []
        else:
            calls.append([(sql, params)])
    if not calls:
        raise SystemExit("no complete call captured")
    # An update's UPDATE, alone, belongs with the read before it.
    last = calls[-1]
    if len(calls) > 1 and len(last) == 1 and last[0][0].upper().startswith("UPDATE"):
        before = calls[-2]
        if len(before) == 1 and before[0][0].upper().startswith("SELECT"):
            return before + last
    return calls[-1]


def version_params(sql):
    """The UPDATE's `"version" = $n` parameters: the one it sets and the
    ones of its condition (the version it read)."""
    where = sql.upper().find(" WHERE ")
    if where < 0:
        raise SystemExit(f"an UPDATE without a WHERE: {sql[:120]}")
    sets, reads = [], []
    for m in re.finditer(r'"version" = \$(\d+)', sql):
        (sets if m.start() < where else reads).append(int(m.group(1)))
    if reads and len(sets) != 1:
        raise SystemExit(f"cannot tell the version an UPDATE sets: {sql[:120]}")
    return sets, reads


def inline(op, sql, params, own_row):
    def value(n):
        v = params.get(n, "NULL")
        if op == "get" and v.strip("'") == own_row:
            return "md5(:n::text)::uuid"
        if op == "update" and v.strip("'") == own_row:
            return "md5((:client_id + 1)::text)::uuid"
        return v
    if op == "update" and sql.upper().startswith("UPDATE"):
        sets, reads = version_params(sql)
        if reads:
            def update_value(n):
                if n in sets:
                    return ":next_version"
                if n in reads:
                    return ":r_version"
                return value(n)
            return re.sub(r"\$(\d+)\b", lambda m: update_value(int(m.group(1))), sql)
    if op == "create" and sql.upper().startswith("INSERT"):
        # The new conversation's id is the first column of the INSERT.
        first_param = min(params) if params else None
        text = re.sub(r"\$(\d+)\b", lambda m: "gen_random_uuid()" if int(m.group(1)) == first_param else value(int(m.group(1))), sql)
        return text
    return re.sub(r"\$(\d+)\b", lambda m: value(int(m.group(1))), sql)


summary = {}
for op, statements in calls.items():
    call = last_call(statements)
    # A captured write that changed nothing sends no UPDATE: pgbench would
    # then be timed on a read.
    verb = {"update": "UPDATE", "create": "INSERT"}.get(op)
    if verb and not any(sql.upper().startswith(verb) for sql, _ in call):
        raise SystemExit(f"{op}: the captured call sent no {verb}: {[sql[:60] for sql, _ in call]}")
    # The row the generator used: seeded row 1 for update (caller 0), and
    # for get whatever seeded id appears.
    own_row = seeded(1)
    if op == "get":
        ids = [v.strip("'") for _, p in call for v in p.values()]
        own_row = next((v for v in ids if v != workspace and re.fullmatch(r"[0-9a-f-]{36}", v)), own_row)
    script = []
    if op == "get":
        script.append(f"\\set n random(1, {rows})")
    reads_version = op == "update" and any(
        version_params(sql)[1] for sql, _ in call if sql.upper().startswith("UPDATE"))
    for sql, params in call:
        text = inline(op, sql, params, own_row)
        if reads_version and sql.upper().startswith("SELECT"):
            # The row read, as variables r_<column>.
            script.append(text + " \\gset r_")
            script.append("\\set next_version :r_version + 1")
        else:
            script.append(text + ";")
    with open(f"{out_dir}/{op}.sql", "w") as f:
        f.write("\n".join(script) + "\n")
    summary[op] = {"statements": [sql for sql, _ in call], "count": len(call)}
print(json.dumps(summary))
