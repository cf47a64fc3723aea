#!/usr/bin/env bash
# Polyglot check: drives a live conversation-service from Node (Connect for
# Node over gRPC, code from protoc-gen-es).
#
#   scripts/polyglot-node.sh BINARY
#
# Regenerates examples/node/gen with scripts/clients.sh (proto/buf.gen.yaml,
# installing examples/node/node_modules from its lockfile if needed), seeds a
# workspace, a customer, a user and a token with the CLI, starts
# `BINARY serve` on a free port with a fresh SQLite database, and runs
# examples/node/check.js against it. Needs node and npm. Exits non-zero on
# any failure.
set -euo pipefail

if [[ $# -ne 1 ]]; then
    echo "usage: $0 BINARY" >&2
    exit 2
fi

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BINARY="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
[[ -x "$BINARY" ]] || { echo "polyglot-node: $BINARY is not an executable" >&2; exit 1; }
for tool in node npm; do
    command -v "$tool" >/dev/null || { echo "polyglot-node: $tool not found on PATH" >&2; exit 1; }
done

WORK="$(mktemp -d "${TMPDIR:-/tmp}/polyglot-node.XXXXXX")"
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
        echo "polyglot-node: FAILED; last server log lines:" >&2
        tail -n 20 "$WORK/server.log" >&2 || true
    fi
    rm -rf "$WORK"
    exit "$status"
}
trap cleanup EXIT
trap 'echo "polyglot-node: FAILED at line $LINENO (exit $?)" >&2' ERR
trap 'exit 130' INT
trap 'exit 143' TERM

# Keep the environment from overriding what this script passes.
unset DATABASE_URL LISTEN_ADDR DEMO TOKEN_REFRESH_INTERVAL
DB=(--database-url "sqlite://$WORK/check.db")

# 1. Code, generated fresh from proto/ (never committed), the way
#    `make clients` does it.
"$ROOT/scripts/clients.sh" node >/dev/null

# 2. Seed data with the CLI. Tokens are loaded when `serve` starts, so issue
#    the token first. The token stays in a variable; it is never printed.
workspace="$("$BINARY" "${DB[@]}" workspace create --name "Polyglot Node")"
customer="$("$BINARY" "${DB[@]}" customer create --workspace "$workspace" \
    --email customer@polyglot.example --name "Polyglot Customer")"
user="$("$BINARY" "${DB[@]}" user create --workspace "$workspace" \
    --email agent@polyglot.example --name "Polyglot Agent")"
token="$("$BINARY" "${DB[@]}" token issue --workspace "$workspace" \
    --abilities external-api:read,external-api:write --name polyglot-node)"
[[ -n "$workspace" && -n "$customer" && -n "$user" && -n "$token" ]] || {
    echo "polyglot-node: seeding printed an empty id or token" >&2
    exit 1
}

# 3. Serve on a free port and wait until the health check says SERVING.
port="$(node -e 'const s = require("net").createServer().listen(0, "127.0.0.1", () => {
    console.log(s.address().port); s.close(); })')"
target="127.0.0.1:$port"
"$BINARY" "${DB[@]}" serve --listen "$target" >"$WORK/server.log" 2>&1 &
SERVER_PID=$!

ready=0
for _ in $(seq 1 100); do
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        echo "polyglot-node: the server exited during startup" >&2
        exit 1
    fi
    if node - "$target" <<'EOF' 2>/dev/null
// grpc.health.v1.Health/Check over plain HTTP/2, without generated code: an
// empty HealthCheckRequest is the 5-byte frame header alone, and
// HealthCheckResponse{status: SERVING} is the frame of the message 08 01.
const http2 = require("node:http2");
const fail = () => process.exit(1);
const session = http2.connect(`http://${process.argv[2]}`).on("error", fail);
const call = session.request({
  ":method": "POST",
  ":path": "/grpc.health.v1.Health/Check",
  "content-type": "application/grpc",
  te: "trailers",
});
call.setTimeout(1000, fail).on("error", fail);
const chunks = [];
call.on("data", (chunk) => chunks.push(chunk));
call.on("end", () => {
  const serving = Buffer.concat(chunks).equals(Buffer.from([0, 0, 0, 0, 2, 0x08, 0x01]));
  process.exit(serving ? 0 : 1);
});
call.end(Buffer.alloc(5));
EOF
    then
        ready=1
        break
    fi
    sleep 0.2
done
[[ $ready -eq 1 ]] || { echo "polyglot-node: the server did not become SERVING on $target" >&2; exit 1; }

# 4. The check itself. The token goes through the environment, not argv.
HELPDESK_TOKEN="$token" node "$ROOT/examples/node/check.js" \
    --target "$target" --customer "$customer" --user "$user" >"$WORK/check.log" 2>&1 || {
    echo "polyglot-node: check.js failed:" >&2
    cat "$WORK/check.log" >&2
    exit 1
}

echo "polyglot-node: ok (create, update with a mask that clears, get, BadRequest details)"
