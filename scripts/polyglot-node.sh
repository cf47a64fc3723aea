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
# any failure. The server's start, stop and seed data come from
# scripts/lib/live-server.sh.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=lib/live-server.sh
source "$ROOT/scripts/lib/live-server.sh"
live_server_init polyglot-node "$@"
live_server_require node npm

# grpc.health.v1.Health/Check over plain HTTP/2, without generated code: an
# empty HealthCheckRequest is the 5-byte frame header alone, and
# HealthCheckResponse{status: SERVING} is the frame of the message 08 01.
live_server_serving() {
    node - "$1" <<'EOF'
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
}

# 1. Code, generated fresh from proto/ (never committed), the way
#    `make clients` does it.
"$ROOT/scripts/clients.sh" node >/dev/null

# 2. Seed data with the CLI, 3. serve until the health check says SERVING.
live_server_seed "Polyglot Node"
live_server_start

# 4. The check itself. The token goes through the environment, not argv.
live_server_check check.js node "$ROOT/examples/node/check.js" \
    --target "$target" --customer "$customer" --user "$user"

echo "polyglot-node: ok (create, update with a mask that clears, get, BadRequest details)"
