#!/usr/bin/env bash
# Regenerates the example clients' code from proto/ (`make clients`).
#
#   scripts/clients.sh [node] [python]      (no argument: both)
#
# node:   `buf generate --template proto/buf.gen.yaml` (protoc-gen-es, local)
#         into examples/node/gen.
# python: grpcio-tools into examples/python/gen.
#
# Generated code is never committed. What is missing is installed first:
# buf under .tools/buf, examples/node/node_modules from its lockfile, and
# grpcio-tools in .tools/venv.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

source scripts/lib/tool-versions.sh
GRPCIO_TOOLS=grpcio-tools==$GRPCIO_VERSION
BUF=.tools/buf/node_modules/.bin/buf
NODE_DIR=examples/node
PY_OUT=examples/python/gen

npm_quiet() { npm --loglevel=error --no-audit --no-fund "$@" >/dev/null; }

gen_node() {
    command -v npm >/dev/null || { echo "clients: npm not found on PATH" >&2; return 1; }
    if [[ ! -x $BUF ]]; then
        npm_quiet install --prefix .tools/buf "@bufbuild/buf@$BUF_VERSION"
    fi
    # Install from the lockfile when node_modules is missing or older than it.
    # No dependency needs an install script.
    if [[ ! -f $NODE_DIR/node_modules/.package-lock.json \
        || $NODE_DIR/package-lock.json -nt $NODE_DIR/node_modules/.package-lock.json ]]; then
        npm_quiet ci --ignore-scripts --prefix "$NODE_DIR"
    fi
    # Paths in buf.gen.yaml are relative to the repository root.
    "$BUF" generate --template proto/buf.gen.yaml
    echo "clients: $NODE_DIR/gen"
}

gen_python() {
    local py=.tools/venv/bin/python
    if ! "$py" -c 'import grpc_tools' 2>/dev/null; then
        python3 -m venv .tools/venv
        "$py" -m pip install --quiet --disable-pip-version-check "$GRPCIO_TOOLS"
    fi
    rm -rf "$PY_OUT"
    mkdir -p "$PY_OUT"
    "$py" -m grpc_tools.protoc -I proto --python_out="$PY_OUT" --grpc_python_out="$PY_OUT" \
        proto/helpdesk/v1/*.proto
    echo "clients: $PY_OUT"
}

targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=(node python)
for target in "${targets[@]}"; do
    case $target in
        node) gen_node ;;
        python) gen_python ;;
        *) echo "usage: $0 [node] [python]" >&2; exit 2 ;;
    esac
done
