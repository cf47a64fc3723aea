#!/usr/bin/env bash
# make bench: the service against PostgreSQL running the same statements.
#
#  1. A fresh database with BENCH_ROWS conversations (1,000,000; 100,000
#     with BENCH_QUICK=1), row n having id md5(n), and a release build.
#  2. Capture: each operation runs briefly with log_statement=all; the
#     statements the service sent become the pgbench scripts
#     (scripts/bench_sql.py), so both sides run the very same SQL,
#     transaction statements included.
#  3. For each operation: the Rust load generator (benches/load.rs) through
#     the service, then pgbench -M prepared with the generated script, at the
#     same concurrency for the same time. CPU comes from /proc: the service
#     process, and PostgreSQL's postmaster (with its reaped children) plus
#     its live backends.
#  4. A table on stdout and target/bench/latest.json.
#
# The cluster may be shared: the bench uses its own database (BENCH_DATABASE,
# default cs_bench_PID) and drops it at the end. BENCH_SQLITE_ONLY=1 runs only
# the SQLite half.
set -euo pipefail
cd "$(dirname "$0")/.."

QUICK=${BENCH_QUICK:-0}
if [ "$QUICK" = 1 ]; then rows_default=100000; seconds_default=1; sqlite_rows_default=20000; else rows_default=1000000; seconds_default=8; sqlite_rows_default=100000; fi
SQLITE_ROWS=${BENCH_SQLITE_ROWS:-$sqlite_rows_default}
ROWS=${BENCH_ROWS:-$rows_default}
SECONDS_PER_OP=${BENCH_SECONDS:-$seconds_default}
CONCURRENCY=${BENCH_CONCURRENCY:-32}
# The service's pool, sized as the PostgreSQL wiki suggests for the
# database's cores (cores x 2 + 1): PostgreSQL shares these cores, and 32
# backends contending for 2 cores cost more CPU per statement than 5 busy
# ones (Get: 59 against 89 us). The callers stay at CONCURRENCY, as do
# pgbench's clients.
POOL=${BENCH_POOL:-$(( $(nproc) * 2 + 1 ))}
# (SQLite's read pool gets the same size; its one writer is apart.)
OPS=(${BENCH_OPS:-get list_first list_deep update create})
OUT=$PWD/target/bench
mkdir -p "$OUT"
work=$(mktemp -d)
cleanup() {
  kill "${server_pid:-}" 2>/dev/null || true
  wait "${server_pid:-}" 2>/dev/null || true
  [ -n "${db:-}" ] && psql -qAtX -d postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

say() { printf '==> %s\n' "$*" >&2; }

say "release build"
# One release build serves both: the service and the load generator share
# the library's artifacts (`cargo bench` would build it again, in its own
# profile).
LOAD_BIN=$(cargo build --locked --release --bin conversation-service --bench load --message-format=json-render-diagnostics \
  | python3 -c 'import json,sys; print(*[m["executable"] for m in map(json.loads, sys.stdin) if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "load" and m.get("executable")])')
[ -x "$LOAD_BIN" ] || { echo "the load generator's executable was not found in cargo's output" >&2; exit 1; }
BIN=target/release/conversation-service
load() { "$LOAD_BIN" 2>/dev/null; }

results="$OUT/results.jsonl"; : > "$results"
rss_kib=0
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
start_server() {
  LISTEN_ADDR=127.0.0.1:$port CONCURRENCY_LIMIT=100000 DATABASE_MAX_CONNECTIONS=$POOL $BIN serve 2>"$OUT/server.log" &
  server_pid=$!
  for _ in $(seq 1 100); do (echo > /dev/tcp/127.0.0.1/$port) 2>/dev/null && return; sleep 0.1; done
  echo "the service did not start" >&2; exit 1
}
export BENCH_ADDR=127.0.0.1:$port

# BENCH_SQLITE_ONLY=1 skips PostgreSQL.
if [ "${BENCH_SQLITE_ONLY:-0}" != 1 ]; then
say "PostgreSQL"
# The cluster may be shared: the bench only checks that it answers (see
# scripts/postgres-test-db.sh to set one up) and touches no database but its
# own, which it drops when it ends.
pg_isready -q -h 127.0.0.1 -p 5432 || { echo "PostgreSQL does not answer on 127.0.0.1:5432 (scripts/postgres-test-db.sh sets it up)" >&2; exit 1; }
read -r pg_version pg_cluster _ _ _ pg_data pg_log < <(pg_lsclusters --no-header | head -1)
export PGPASSWORD=conversation_test PGHOST=127.0.0.1 PGUSER=conversation_test
db=${BENCH_DATABASE:-cs_bench_$$}
psql -qAtX -d postgres -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
url="postgres://conversation_test:conversation_test@127.0.0.1:5432/$db"
as_postgres() { su - postgres -c "psql -qAtX -d $db -c \"$1\""; }

say "seeding $ROWS conversations"
export DATABASE_URL=$url LOG_FILTER=warn
$BIN migrate
ws=$($BIN workspace create --name Bench)
customer=$($BIN customer create --workspace "$ws" --email bench@example.com)
token=$($BIN token issue --workspace "$ws" --abilities external-api:read,external-api:write)
psql -qAtX -d $db -c "INSERT INTO conversations (id, workspace_id, channel, customer_id, status, priority, tags, attributes, is_spam, created_at, updated_at, version)
  SELECT md5(n::text)::uuid, '$ws', 'email', '$customer', 'open', 'normal', '[]'::jsonb, '{}'::jsonb, false,
         now() - n * interval '1 second', now() - n * interval '1 second', 1
  FROM generate_series(1, $ROWS) AS n" -c "VACUUM ANALYZE conversations"

export BENCH_TOKEN=$token BENCH_CUSTOMER=$customer BENCH_ROWS=$ROWS

say "capturing the service's statements"
as_postgres "ALTER DATABASE $db SET log_statement = 'all'"
start_server
log_start=$(stat -c %s "$pg_log")
for op in "${OPS[@]}"; do
  psql -qAtX -d $db -c "SELECT 'bench-op:$op'" >/dev/null
  BENCH_OP=$op BENCH_CONCURRENCY=1 BENCH_MILLIS=200 load >/dev/null
done
sleep 0.5
tail -c +$((log_start + 1)) "$pg_log" | grep "@$db " > "$work/capture.log"
kill "$server_pid"; wait "$server_pid" 2>/dev/null || true
as_postgres "ALTER DATABASE $db RESET log_statement"
python3 scripts/bench_sql.py "$work/capture.log" "$work" "$ROWS" "$ws" > "$OUT/statements.json"
for op in "${OPS[@]}"; do cp "$work/$op.sql" "$OUT/pgbench-$op.sql"; done

# CPU ticks of one process (utime + stime), and of PostgreSQL as a whole.
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
pg_ticks() {
  local master total=0
  master=$(head -1 "$pg_data/postmaster.pid")
  total=$(awk '{print $14 + $15 + $16 + $17}' "/proc/$master/stat")
  for child in $(pgrep -P "$master"); do total=$((total + $(ticks "$child" 2>/dev/null || echo 0))); done
  echo "$total"
}

say "measuring: $CONCURRENCY callers (the service's pool: $POOL connections), ${SECONDS_PER_OP}s per operation"
start_server
for op in "${OPS[@]}"; do
  s0=$(ticks "$server_pid"); p0=$(pg_ticks)
  service=$(BENCH_OP=$op BENCH_CONCURRENCY=$CONCURRENCY BENCH_SECONDS=$SECONDS_PER_OP load)
  s1=$(ticks "$server_pid"); p1=$(pg_ticks)
  (cd "$work" && rm -f pgbench_log.* && pgbench -h 127.0.0.1 -n -M prepared -c "$CONCURRENCY" -j 2 -T "$SECONDS_PER_OP" -l -f "$op.sql" $db > pgbench.out 2>&1) || { cat "$work/pgbench.out" >&2; exit 1; }
  # pgbench's backends exit after it does; once reaped, their CPU shows in
  # the postmaster's children counters.
  for _ in $(seq 1 50); do [ "$(pgrep -P "$(head -1 "$pg_data/postmaster.pid")" | wc -l)" -le "$((CONCURRENCY + 8))" ] && break; sleep 0.1; done
  sleep 0.5
  p2=$(pg_ticks)
  python3 - "$op" "$service" "$work" "$((s1 - s0))" "$((p1 - p0))" "$((p2 - p1))" "$OUT/statements.json" >> "$results" <<'PY'
import glob, json, re, sys, os
op, service, work, svc_ticks, pg_svc_ticks, pg_bench_ticks, statements = sys.argv[1:8]
service = json.loads(service)
hz = os.sysconf("SC_CLK_TCK")
out = open(f"{work}/pgbench.out").read()
tps = float(re.search(r"tps = ([\d.]+)", out).group(1))
lat = sorted(int(l.split()[2]) for f in glob.glob(f"{work}/pgbench_log.*") for l in open(f))
pct = lambda p: lat[min(int(len(lat) * p), len(lat) - 1)] / 1000.0
per_call = json.load(open(statements))[op]["count"]
tx = len(lat)
print(json.dumps({
    "op": op,
    "service_rps": service["rps"], "service_p50_ms": service["p50_ms"], "service_p99_ms": service["p99_ms"],
    "service_errors": service["errors"],
    "pgbench_tps": tps, "pgbench_p50_ms": pct(0.5), "pgbench_p99_ms": pct(0.99),
    "ratio": round(service["rps"] / tps, 3) if tps else None,
    "statements_per_call": per_call,
    "service_cpu_us_per_request": round(int(svc_ticks) * 1e6 / hz / max(service["calls"], 1), 1),
    "load_generator_cpu_us_per_request": round(service.get("cpu_ticks", 0) * 1e6 / hz / max(service["calls"], 1), 1),
    "postgres_cpu_us_per_statement": round(int(pg_bench_ticks) * 1e6 / hz / max(tx * per_call, 1), 1),
    "postgres_cpu_us_per_statement_under_service": round(int(pg_svc_ticks) * 1e6 / hz / max(service["calls"] * per_call, 1), 1),
}))
PY
  say "$op done"
done

# The transport's ceiling: the standard health Check through the same
# server layers, touching no database. Its CPU per call, with the load
# generator's and PostgreSQL's per statement, bounds what any operation can
# reach on these cores even if the handler and the driver cost nothing.
say "transport ceiling (health Check)"
s0=$(ticks "$server_pid")
ceiling=$(BENCH_OP=health BENCH_CONCURRENCY=$CONCURRENCY BENCH_SECONDS=$SECONDS_PER_OP load)
s1=$(ticks "$server_pid")
python3 -c 'import json,os,sys; c=json.loads(sys.argv[1]); us=1e6/os.sysconf("SC_CLK_TCK")/max(c["calls"],1); print(json.dumps({"rps": c["rps"], "service_cpu_us_per_request": round(int(sys.argv[2])*us, 1), "load_generator_cpu_us_per_request": round(c["cpu_ticks"]*us, 1)}))' \
  "$ceiling" "$((s1 - s0))" > "$OUT/ceiling.json"

say "peak RSS at 256 callers"
BENCH_OP=get BENCH_CONCURRENCY=256 BENCH_SECONDS=$SECONDS_PER_OP load > "$OUT/rss-run.json"
rss_kib=$(awk '/VmHWM/ {print $2}' "/proc/$server_pid/status")
kill "$server_pid"; wait "$server_pid" 2>/dev/null || true
fi

# SQLite, the embedded default: the service beside python3's sqlite3 module
# running the statements the service sent (scripts/bench_sqlite.py).
say "SQLite: seeding $SQLITE_ROWS conversations"
sq="$work/sqlite"; mkdir -p "$sq"
export DATABASE_URL="sqlite://$sq/bench.db"
$BIN migrate
sws=$($BIN workspace create --name Bench)
scustomer=$($BIN customer create --workspace "$sws" --email bench@example.com)
stoken=$($BIN token issue --workspace "$sws" --abilities external-api:read,external-api:write)
export BENCH_TOKEN=$stoken BENCH_CUSTOMER=$scustomer BENCH_ROWS=$SQLITE_ROWS
LOG_FILTER="warn,sqlx::query=trace" start_server
BENCH_OP=create BENCH_CONCURRENCY=1 BENCH_CALLS=1 load > /dev/null
for op in get update create; do
  offset=$(stat -c %s "$OUT/server.log")
  if [ "$op" = get ]; then
    # The template row exists now: copy it to SQLITE_ROWS rows with ids md5(n).
    kill "$server_pid"; wait "$server_pid" 2>/dev/null || true
    python3 scripts/bench_sqlite.py seed "$sq/bench.db" "$SQLITE_ROWS"
    LOG_FILTER="warn,sqlx::query=trace" start_server
    offset=$(stat -c %s "$OUT/server.log")
  fi
  BENCH_OP=$op BENCH_CONCURRENCY=1 BENCH_CALLS=1 load > /dev/null
  sleep 0.3
  tail -c +$((offset + 1)) "$OUT/server.log" > "$sq/$op.log"
done
kill "$server_pid"; wait "$server_pid" 2>/dev/null || true
say "SQLite: measuring"
LOG_FILTER=warn start_server
sqlite_results="$OUT/sqlite.jsonl"; : > "$sqlite_results"
for op in get update create; do
  service=$(BENCH_OP=$op BENCH_CONCURRENCY=$CONCURRENCY BENCH_SECONDS=$SECONDS_PER_OP load)
  plain=$(python3 scripts/bench_sqlite.py run "$sq/bench.db" "$op" "$sq/$op.log" "$SECONDS_PER_OP" "$sws" "$scustomer")
  python3 -c 'import json,sys; s,p=json.loads(sys.argv[1]),json.loads(sys.argv[2]); print(json.dumps({"op": s["op"], "service_rps": s["rps"], "service_p50_ms": s["p50_ms"], "service_p99_ms": s["p99_ms"], "service_errors": s["errors"], "sqlite3_ops_per_s": p["ops_per_s"], "statements_per_call": p["statements"], "transaction": p["transaction"], "ratio": round(s["rps"] / p["ops_per_s"], 3)}))' "$service" "$plain" >> "$sqlite_results"
  say "SQLite $op done"
done

python3 - "$results" "$rss_kib" "$ROWS" "$CONCURRENCY" "$SECONDS_PER_OP" "$OUT" "$sqlite_results" "$SQLITE_ROWS" "$POOL" <<'PY'
import json, sys, platform, os
results, rss, rows, conc, secs, out, sqlite_results, sqlite_rows, pool = sys.argv[1:10]
ops = [json.loads(l) for l in open(results)]
ceiling = json.load(open(f"{out}/ceiling.json")) if ops else None
cpus = len(os.sched_getaffinity(0))  # as nproc counts them
for o in ops:
    # The most this operation could reach if only the transport, the load
    # generator and PostgreSQL's own statements used the cores.
    per_call = (ceiling["service_cpu_us_per_request"] + ceiling["load_generator_cpu_us_per_request"]
                + o["postgres_cpu_us_per_statement"] * o["statements_per_call"])
    o["cpu_bound_rps_with_free_handler"] = round(cpus * 1e6 / per_call, 1)
    o["cpu_bound_ratio_with_free_handler"] = round(o["cpu_bound_rps_with_free_handler"] / o["pgbench_tps"], 3)
sqlite = [json.loads(l) for l in open(sqlite_results)]
names = {"create": "Create", "update": "Update (2-field mask + etag)", "get": "Get",
         "list_first": "List first page (50)", "list_deep": f"List page 1,000 over {int(rows):,} rows"}
print(f"\n{'operation':38} {'svc RPC/s':>10} {'pgbench TPS':>12} {'ratio':>6} {'svc p50':>8} {'svc p99':>8} {'pg p50':>7} {'pg p99':>7} {'svc CPU/req':>11} {'pg CPU/stmt':>11} {'load CPU/req':>12} {'bound':>6}")
for o in ops:
    print(f"{names[o['op']]:38} {o['service_rps']:>10.0f} {o['pgbench_tps']:>12.0f} {o['ratio']:>6.2f} "
          f"{o['service_p50_ms']:>6.2f}ms {o['service_p99_ms']:>6.2f}ms {o['pgbench_p50_ms']:>5.2f}ms {o['pgbench_p99_ms']:>5.2f}ms "
          f"{o['service_cpu_us_per_request']:>9.0f}us {o['postgres_cpu_us_per_statement']:>9.0f}us "
          f"{o['load_generator_cpu_us_per_request']:>10.0f}us {o['cpu_bound_ratio_with_free_handler']:>6.2f}")
if ceiling:
    print(f"\ntransport ceiling, the health Check (no database): {ceiling['rps']:.0f} RPC/s, "
          f"service CPU {ceiling['service_cpu_us_per_request']:.0f}us/req, load generator {ceiling['load_generator_cpu_us_per_request']:.0f}us/req")
    print("bound: the highest ratio these cores allow if the handler and the driver cost nothing "
          "(transport + load generator + PostgreSQL's CPU for the statements)")
first = next((o for o in ops if o["op"] == "list_first"), None)
deep = next((o for o in ops if o["op"] == "list_deep"), None)
deep_ratio = deep["service_p50_ms"] / first["service_p50_ms"] if first and deep else None
if deep_ratio is not None:
    print(f"\npage 1,000 p50 / page 1 p50: {deep_ratio:.2f} (target <= 1.5)")
if ops:
    print(f"service peak RSS after 256 concurrent callers: {int(rss) / 1024:.1f} MiB (target < 64 MiB)")
print(f"\nSQLite ({int(sqlite_rows):,} rows; python3 sqlite3, one connection, same statements)")
print(f"{'operation':12} {'svc RPC/s':>10} {'sqlite3 ops/s':>14} {'ratio':>6} {'svc p50':>8} {'svc p99':>8}   (target ratio >= 0.5)")
for o in sqlite:
    print(f"{o['op']:12} {o['service_rps']:>10.0f} {o['sqlite3_ops_per_s']:>14.0f} {o['ratio']:>6.2f} {o['service_p50_ms']:>6.2f}ms {o['service_p99_ms']:>6.2f}ms")
report = {"machine": {"cpus": cpus, "platform": platform.platform()},
          "settings": {"rows": int(rows), "concurrency": int(conc), "seconds_per_op": int(secs),
                       "service_pool_connections": int(pool)},
          "operations": ops, "transport_ceiling": ceiling, "service_peak_rss_kib": int(rss),
          "sqlite": {"rows": int(sqlite_rows), "operations": sqlite},
          "deep_over_first_page_p50": deep_ratio}
json.dump(report, open(f"{out}/latest.json", "w"), indent=2)
print(f"written: {out}/latest.json")
PY
