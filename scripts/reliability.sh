#!/usr/bin/env bash
# The reliability suite (tests/reliability): real serve processes, two
# replicas on PostgreSQL, cancelled calls, a replica restart, PostgreSQL
# stopped and started under load, SIGTERM under load, 2x overload.
#
# Sizes come from RELIABILITY_UPDATES and RELIABILITY_KEYS (make test uses
# the defaults, make reliability larger ones). The measured figures are
# printed as `reliability:` lines and kept in target/reliability/report.txt.
#
# The outage test stops and starts the local cluster with pg_ctlcluster, so
# the tests run one at a time and nothing else may use that cluster meanwhile.
set -euo pipefail
cd "$(dirname "$0")/.."

args=(--locked --test reliability)
[ "${RELIABILITY_RELEASE:-false}" = true ] && args+=(--release)

if pg_url=$(scripts/postgres-test-db.sh); then
  export TEST_POSTGRES_URL="$pg_url"
  if command -v pg_lsclusters >/dev/null 2>&1; then
    RELIABILITY_PG_CLUSTER=$(pg_lsclusters --no-header | awk 'NR==1 {print $1" "$2}')
    export RELIABILITY_PG_CLUSTER
  fi
fi

mkdir -p target/reliability
cargo test "${args[@]}" -- --test-threads=1 --nocapture 2>&1 | tee target/reliability/run.log
status=${PIPESTATUS[0]}
grep -oE '^reliability: .*' target/reliability/run.log | sort -u > target/reliability/report.txt || true
echo
echo "== reliability figures (target/reliability/report.txt)"
cat target/reliability/report.txt
exit "$status"
