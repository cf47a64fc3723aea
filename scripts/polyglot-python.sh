#!/usr/bin/env bash
# Polyglot check: drives a live conversation-service from Python.
#
#   scripts/polyglot-python.sh BINARY
#
# Generates Python stubs from proto/ into a temp dir, seeds a workspace, a
# customer, a user and a token with the CLI, starts `BINARY serve` on a free
# port with a fresh SQLite database, and runs examples/python/check.py
# against it. Needs `python` (or $PYTHON) with grpcio and grpcio-tools, e.g.
# .tools/venv/bin on PATH. Exits non-zero on any failure.
set -euo pipefail

if [[ $# -ne 1 ]]; then
    echo "usage: $0 BINARY" >&2
    exit 2
fi

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BINARY="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
PYTHON="${PYTHON:-python}"
[[ -x "$BINARY" ]] || { echo "polyglot-python: $BINARY is not an executable" >&2; exit 1; }
command -v "$PYTHON" >/dev/null || { echo "polyglot-python: $PYTHON not found on PATH" >&2; exit 1; }

WORK="$(mktemp -d "${TMPDIR:-/tmp}/polyglot-python.XXXXXX")"
SERVER_PID=""
cleanup() {
    local status=$?
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 1 50); do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    if [[ $status -ne 0 && -s "$WORK/server.log" ]]; then
        echo "polyglot-python: FAILED; last server log lines:" >&2
        tail -n 20 "$WORK/server.log" >&2 || true
    fi
    rm -rf "$WORK"
    exit "$status"
}
trap cleanup EXIT
trap 'echo "polyglot-python: FAILED at line $LINENO (exit $?)" >&2' ERR
trap 'exit 130' INT
trap 'exit 143' TERM

# Keep the environment from overriding what this script passes.
unset DATABASE_URL LISTEN_ADDR DEMO TOKEN_REFRESH_INTERVAL
export PYTHONDONTWRITEBYTECODE=1  # no __pycache__ next to examples/python
DB=(--database-url "sqlite://$WORK/check.db")

# 1. Stubs, generated fresh from proto/ (never committed).
mkdir -p "$WORK/stubs"
"$PYTHON" -m grpc_tools.protoc -I "$ROOT/proto" \
    --python_out="$WORK/stubs" --grpc_python_out="$WORK/stubs" \
    "$ROOT"/proto/helpdesk/v1/*.proto

# 2. Seed data with the CLI. Tokens are loaded when `serve` starts, so issue
#    the token first. The token stays in a variable; it is never printed.
workspace="$("$BINARY" "${DB[@]}" workspace create --name "Polyglot Python")"
customer="$("$BINARY" "${DB[@]}" customer create --workspace "$workspace" \
    --email customer@polyglot.example --name "Polyglot Customer")"
user="$("$BINARY" "${DB[@]}" user create --workspace "$workspace" \
    --email agent@polyglot.example --name "Polyglot Agent")"
token="$("$BINARY" "${DB[@]}" token issue --workspace "$workspace" \
    --abilities external-api:read,external-api:write --name polyglot-python)"
[[ -n "$workspace" && -n "$customer" && -n "$user" && -n "$token" ]] || {
    echo "polyglot-python: seeding printed an empty id or token" >&2
    exit 1
}

# 3. Serve on a free port and wait until the health check says SERVING.
port="$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')"
target="127.0.0.1:$port"
"$BINARY" "${DB[@]}" serve --listen "$target" >"$WORK/server.log" 2>&1 &
SERVER_PID=$!

ready=0
for _ in $(seq 1 100); do
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        echo "polyglot-python: the server exited during startup" >&2
        exit 1
    fi
    if "$PYTHON" - "$target" <<'EOF' 2>/dev/null
import sys, grpc
# grpc.health.v1.Health/Check without grpcio-health-checking: an empty
# HealthCheckRequest, and HealthCheckResponse{status: SERVING} is b"\x08\x01".
with grpc.insecure_channel(sys.argv[1]) as channel:
    check = channel.unary_unary("/grpc.health.v1.Health/Check")
    sys.exit(0 if check(b"", timeout=1) == b"\x08\x01" else 1)
EOF
    then
        ready=1
        break
    fi
    sleep 0.2
done
[[ $ready -eq 1 ]] || { echo "polyglot-python: the server did not become SERVING on $target" >&2; exit 1; }

# 4. The check itself. The token goes through the environment, not argv.
HELPDESK_TOKEN="$token" "$PYTHON" "$ROOT/examples/python/check.py" \
    --target "$target" --stubs "$WORK/stubs" \
    --customer "$customer" --user "$user" >"$WORK/check.log" 2>&1 || {
    echo "polyglot-python: check.py failed:" >&2
    cat "$WORK/check.log" >&2
    exit 1
}

echo "polyglot-python: ok (create, update, get, errors)"
