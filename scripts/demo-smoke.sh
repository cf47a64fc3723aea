#!/usr/bin/env bash
# Smoke test of `serve --demo`: the grpcurl line it prints must work as is.
#
#   scripts/demo-smoke.sh BINARY
#
# Starts `BINARY serve --demo` on a free port with a fresh SQLite database in
# a temp dir (also the working directory), runs the printed grpcurl line with
# eval, checks health and reflection with grpcurl, then sends SIGTERM and
# expects exit status 0 within 15 s. Needs grpcurl and python3 (or $PYTHON)
# on PATH. Exits non-zero on any failure.
set -euo pipefail

if [[ $# -ne 1 ]]; then
    echo "usage: $0 BINARY" >&2
    exit 2
fi

BINARY="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
PYTHON="${PYTHON:-python3}"
[[ -x "$BINARY" ]] || { echo "demo-smoke: $BINARY is not an executable" >&2; exit 1; }
command -v grpcurl >/dev/null || { echo "demo-smoke: grpcurl not found on PATH" >&2; exit 1; }
command -v "$PYTHON" >/dev/null || { echo "demo-smoke: $PYTHON not found on PATH" >&2; exit 1; }

WORK="$(mktemp -d "${TMPDIR:-/tmp}/demo-smoke.XXXXXX")"
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
    # Only the server's stderr (logs) is shown: its stdout holds the token.
    if [[ $status -ne 0 && -s "$WORK/server.err" ]]; then
        echo "demo-smoke: FAILED; last server log lines:" >&2
        tail -n 20 "$WORK/server.err" >&2 || true
    fi
    cd /
    rm -rf "$WORK"
    exit "$status"
}
trap cleanup EXIT
trap 'echo "demo-smoke: FAILED at line $LINENO (exit $?)" >&2' ERR
trap 'exit 130' INT
trap 'exit 143' TERM

fail() {
    echo "demo-smoke: $*" >&2
    exit 1
}

# Keep the environment from overriding what this script passes.
unset DATABASE_URL LISTEN_ADDR DEMO
cd "$WORK"

port="$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')"
address="127.0.0.1:$port"

"$BINARY" serve --demo --listen "$address" --database-url "sqlite://$WORK/demo.db" \
    >"$WORK/server.out" 2>"$WORK/server.err" &
SERVER_PID=$!

# Wait for the health check to say SERVING and for the banner's grpcurl line.
health=""
demo_line=""
for _ in $(seq 1 100); do
    kill -0 "$SERVER_PID" 2>/dev/null || fail "the server exited during startup"
    health="$(grpcurl -plaintext -max-time 2 "$address" grpc.health.v1.Health/Check 2>/dev/null || true)"
    demo_line="$(grep -m1 -E '^[[:space:]]*grpcurl ' "$WORK/server.out" || true)"
    if [[ -n "$demo_line" ]] && grep -q '"status": "SERVING"' <<<"$health"; then
        break
    fi
    sleep 0.2
done
[[ -n "$demo_line" ]] || fail "the demo banner printed no grpcurl line"
grep -q '"status": "SERVING"' <<<"$health" || fail "Health/Check did not report SERVING: $health"

# 1. The printed grpcurl line, exactly as printed (not echoed: it holds the
#    token). Its output is JSON with the created conversation.
if ! created="$(eval "$demo_line" 2>"$WORK/grpcurl.err")"; then
    fail "the demo grpcurl line failed: $(cat "$WORK/grpcurl.err")"
fi
grep -q '"conversation"' <<<"$created" || fail "the demo grpcurl line printed no conversation: $created"
grep -q '"id"' <<<"$created" || fail "the created conversation has no id: $created"

# 2. Health (again, explicitly) and reflection, without a token.
health="$(grpcurl -plaintext "$address" grpc.health.v1.Health/Check)"
grep -q '"status": "SERVING"' <<<"$health" || fail "Health/Check did not report SERVING: $health"
services="$(grpcurl -plaintext "$address" list)"
grep -qx 'helpdesk.v1.ConversationService' <<<"$services" \
    || fail "reflection does not list helpdesk.v1.ConversationService: $services"

# 3. SIGTERM: the server must exit by itself, with status 0, within 15 s.
kill -TERM "$SERVER_PID"
exited=0
for _ in $(seq 1 150); do
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        exited=1
        break
    fi
    sleep 0.1
done
[[ $exited -eq 1 ]] || fail "the server did not exit within 15 s of SIGTERM"
exit_status=0
wait "$SERVER_PID" || exit_status=$?
SERVER_PID=""
[[ $exit_status -eq 0 ]] || fail "the server exited with status $exit_status after SIGTERM"

echo "demo-smoke: ok"
