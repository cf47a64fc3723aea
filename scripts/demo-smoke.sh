#!/usr/bin/env bash
# Smoke test of `serve --demo`: the grpcurl line it prints must work as is.
#
#   scripts/demo-smoke.sh BINARY
#
# Starts `BINARY serve --demo` on a free port with a fresh SQLite database in
# a temp dir (also the working directory), runs the printed grpcurl line with
# eval, checks health and reflection with grpcurl, then sends SIGTERM and
# expects exit status 0 within 15 s. Needs grpcurl on PATH (and python3 to
# pick the port, else bash's /dev/tcp is used). Exits non-zero on any
# failure. The server's start and stop come from scripts/lib/live-server.sh.
set -euo pipefail

# shellcheck source=lib/live-server.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/live-server.sh"
live_server_init demo-smoke "$@"
live_server_require grpcurl
cd "$WORK"
# The banner (with the token) goes to stdout; only stderr is ever shown.
LIVE_SERVER_STDOUT="$WORK/server.out"

health_check() { grpcurl -plaintext -max-time 2 "$1" grpc.health.v1.Health/Check; }
live_server_serving() { grep -q '"status": "SERVING"' <<<"$(health_check "$1")"; }

live_server_start --demo

# Wait for the banner's grpcurl line.
demo_line=""
for _ in $(seq 1 50); do
    demo_line="$(grep -m1 -E '^[[:space:]]*grpcurl ' "$WORK/server.out" || true)"
    if [[ -n "$demo_line" ]]; then
        break
    fi
    sleep 0.1
done
[[ -n "$demo_line" ]] || live_server_fail "the demo banner printed no grpcurl line"

# 1. The printed grpcurl line, exactly as printed (not echoed: it holds the
#    token). Its output is JSON with the created conversation.
if ! created="$(eval "$demo_line" 2>"$WORK/grpcurl.err")"; then
    live_server_fail "the demo grpcurl line failed: $(cat "$WORK/grpcurl.err")"
fi
grep -q '"conversation"' <<<"$created" \
    || live_server_fail "the demo grpcurl line printed no conversation: $created"
grep -q '"id"' <<<"$created" || live_server_fail "the created conversation has no id: $created"

# 2. Health (again, explicitly) and reflection, without a token.
health="$(health_check "$target")"
grep -q '"status": "SERVING"' <<<"$health" \
    || live_server_fail "Health/Check did not report SERVING: $health"
services="$(grpcurl -plaintext "$target" list)"
grep -qx 'helpdesk.v1.ConversationService' <<<"$services" \
    || live_server_fail "reflection does not list helpdesk.v1.ConversationService: $services"

# 3. SIGTERM: the server must exit by itself, with status 0, within 15 s.
live_server_stop 15 || live_server_fail "the server did not exit within 15 s of SIGTERM"
[[ $SERVER_STATUS -eq 0 ]] \
    || live_server_fail "the server exited with status $SERVER_STATUS after SIGTERM"

echo "demo-smoke: ok"
