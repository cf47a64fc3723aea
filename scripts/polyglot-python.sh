#!/usr/bin/env bash
# Polyglot check: drives a live conversation-service from Python.
#
#   scripts/polyglot-python.sh BINARY
#
# Generates Python stubs from proto/ into a temp dir, seeds a workspace, a
# customer, a user and a token with the CLI, starts `BINARY serve` on a free
# port with a fresh SQLite database, and runs examples/python/check.py
# against it. Needs `python` (or $PYTHON) with grpcio and grpcio-tools, e.g.
# .tools/venv/bin on PATH. Exits non-zero on any failure. The server's
# start, stop and seed data come from scripts/lib/live-server.sh.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=lib/live-server.sh
source "$ROOT/scripts/lib/live-server.sh"
live_server_init polyglot-python "$@"
PYTHON="${PYTHON:-python}"
live_server_require "$PYTHON"
export PYTHONDONTWRITEBYTECODE=1  # no __pycache__ next to examples/python

# grpc.health.v1.Health/Check without grpcio-health-checking: an empty
# HealthCheckRequest, and HealthCheckResponse{status: SERVING} is b"\x08\x01".
live_server_serving() {
    "$PYTHON" - "$1" <<'EOF'
import sys, grpc
with grpc.insecure_channel(sys.argv[1]) as channel:
    check = channel.unary_unary("/grpc.health.v1.Health/Check")
    sys.exit(0 if check(b"", timeout=1) == b"\x08\x01" else 1)
EOF
}

# 1. Stubs, generated fresh from proto/ (never committed).
mkdir -p "$WORK/stubs"
"$PYTHON" -m grpc_tools.protoc -I "$ROOT/proto" \
    --python_out="$WORK/stubs" --grpc_python_out="$WORK/stubs" \
    "$ROOT"/proto/helpdesk/v1/*.proto

# 2. Seed data with the CLI, 3. serve until the health check says SERVING.
live_server_seed "Polyglot Python"
live_server_start

# 4. The check itself. The token goes through the environment, not argv.
live_server_check check.py "$PYTHON" "$ROOT/examples/python/check.py" \
    --target "$target" --stubs "$WORK/stubs" --customer "$customer" --user "$user"

echo "polyglot-python: ok (create, update, get, errors)"
