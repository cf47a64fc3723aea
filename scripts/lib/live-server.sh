# shellcheck shell=bash
# Shared by the scripts that check a live `conversation-service serve`
# (polyglot-python.sh, polyglot-node.sh, demo-smoke.sh): one place for the
# temp dir, the traps that stop the server and show its log on failure, the
# free port, the seed data and the wait for SERVING.
#
# Source it from a script running under `set -euo pipefail`, then:
#
#   live_server_init NAME "$@"     usage check, BINARY, WORK, traps
#   live_server_require TOOL...    each TOOL must be on PATH
#   live_server_seed WORKSPACE     workspace customer user token (CLI)
#   live_server_serving() { ...; } the readiness hook, see live_server_start
#   live_server_start [ARG...]     serve on a free port: target SERVER_PID
#   live_server_check LABEL CMD... CMD with HELPDESK_TOKEN=$token, quietly
#   live_server_stop [SECONDS]     SIGTERM, wait: SERVER_STATUS
#   live_server_fail MESSAGE...    "NAME: MESSAGE" on stderr, exit 1
#
# Globals it sets: LIVE_NAME, BINARY (absolute), WORK (removed on exit),
# LIVE_DB_URL (a fresh SQLite database in WORK), target (HOST:PORT),
# SERVER_PID, SERVER_STATUS, and workspace customer user token.
# LIVE_SERVER_STDOUT, if set between live_server_init and live_server_start,
# is a file for the server's stdout alone; the failure output then shows
# only its stderr (for `serve --demo`, whose stdout holds a token).

# live_server_fail MESSAGE...: prints "NAME: MESSAGE" on stderr and exits 1
# (the EXIT trap then stops the server and shows its log).
live_server_fail() {
    echo "$LIVE_NAME: $*" >&2
    exit 1
}

# live_server_init NAME BINARY: takes the script's arguments (exactly one,
# the binary, else usage and exit 2), sets BINARY to its absolute path,
# creates WORK, and installs the EXIT/ERR/INT/TERM traps. Clears the
# environment variables that would override what these scripts pass to
# `serve`.
live_server_init() {
    LIVE_NAME=$1
    shift
    if [[ $# -ne 1 ]]; then
        echo "usage: $0 BINARY" >&2
        exit 2
    fi
    BINARY="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
    [[ -x "$BINARY" ]] || live_server_fail "$BINARY is not an executable"

    WORK="$(mktemp -d "${TMPDIR:-/tmp}/$LIVE_NAME.XXXXXX")"
    LIVE_DB_URL="sqlite://$WORK/check.db"
    LIVE_SERVER_STDOUT=""
    SERVER_PID=""
    SERVER_STATUS=""
    trap _live_server_cleanup EXIT
    trap 'echo "$LIVE_NAME: FAILED at line $LINENO (exit $?)" >&2' ERR
    trap 'exit 130' INT
    trap 'exit 143' TERM

    unset DATABASE_URL LISTEN_ADDR DEMO TOKEN_REFRESH_INTERVAL METRICS_LISTEN LOG_FORMAT \
        OTEL_EXPORTER_OTLP_ENDPOINT OTEL_EXPORTER_OTLP_TRACES_ENDPOINT
}

# live_server_require TOOL...: fails unless every TOOL is on PATH.
live_server_require() {
    local tool
    for tool in "$@"; do
        command -v "$tool" >/dev/null || live_server_fail "$tool not found on PATH"
    done
}

# live_server_stop [SECONDS]: sends SIGTERM to the server and waits up to
# SECONDS (default 5) for it to exit. If it did, sets SERVER_STATUS to its
# exit status and returns 0; if not, kills it (SIGKILL) and returns 1.
# Either way SERVER_PID is cleared. Without a server it returns 0.
live_server_stop() {
    local tenths=$(( ${1:-5} * 10 )) exited=0
    [[ -n "$SERVER_PID" ]] || return 0
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 1 "$tenths"); do
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            exited=1
            break
        fi
        sleep 0.1
    done
    [[ $exited -eq 1 ]] || kill -KILL "$SERVER_PID" 2>/dev/null || true
    SERVER_STATUS=0
    wait "$SERVER_PID" 2>/dev/null || SERVER_STATUS=$?
    SERVER_PID=""
    [[ $exited -eq 1 ]]
}

# The EXIT trap: stops the server, shows the tail of its log if the script
# failed, removes WORK, and keeps the script's exit status. SIGINT and
# SIGTERM are ignored meanwhile, so that it always finishes (in at most 5 s).
_live_server_cleanup() {
    local status=$?
    trap '' INT TERM
    live_server_stop 5 || true
    if [[ $status -ne 0 && -s "$WORK/server.log" ]]; then
        echo "$LIVE_NAME: FAILED; last server log lines:" >&2
        tail -n 20 "$WORK/server.log" >&2 || true
    fi
    cd /
    rm -rf "$WORK"
    exit "$status"
}

# live_server_free_port: prints a TCP port on 127.0.0.1 that is free now
# (the kernel's pick via python3; without python3, a random port that
# refuses connections).
live_server_free_port() {
    if command -v python3 >/dev/null; then
        python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
        return
    fi
    local port
    for _ in $(seq 1 50); do
        port=$(( 20000 + RANDOM % 40000 ))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return 0
        fi
    done
    return 1
}

# live_server_seed WORKSPACE: with the CLI on LIVE_DB_URL, creates a
# workspace named WORKSPACE, a customer, a user, and a token (read and write,
# named LIVE_NAME), setting workspace customer user token. Run it before
# live_server_start: `serve` loads tokens when it starts. The token stays in
# its variable; it is never printed.
live_server_seed() {
    local db=(--database-url "$LIVE_DB_URL")
    workspace="$("$BINARY" "${db[@]}" workspace create --name "$1")" \
        || live_server_fail "workspace create failed (exit $?)"
    customer="$("$BINARY" "${db[@]}" customer create --workspace "$workspace" \
        --email customer@polyglot.example --name "Polyglot Customer")" \
        || live_server_fail "customer create failed (exit $?)"
    user="$("$BINARY" "${db[@]}" user create --workspace "$workspace" \
        --email agent@polyglot.example --name "Polyglot Agent")" \
        || live_server_fail "user create failed (exit $?)"
    token="$("$BINARY" "${db[@]}" token issue --workspace "$workspace" \
        --abilities external-api:read,external-api:write --name "$LIVE_NAME")" \
        || live_server_fail "token issue failed (exit $?)"
    [[ -n "$workspace" && -n "$customer" && -n "$user" && -n "$token" ]] \
        || live_server_fail "seeding printed an empty id or token"
}

# live_server_start [ARG...]: starts `BINARY --database-url LIVE_DB_URL serve
# --listen 127.0.0.1:PORT ARG...` in the background on a free port, its
# output in WORK/server.log (stderr only if LIVE_SERVER_STDOUT is set), and
# sets target and SERVER_PID. Returns once the script's hook
# `live_server_serving TARGET` succeeds (it must succeed only when
# grpc.health.v1.Health/Check on TARGET answers SERVING; its stderr is
# discarded), trying every 0.2 s for about 20 s. Fails if the server exits
# first; a port taken in the meantime is retried on another port.
live_server_start() {
    declare -F live_server_serving >/dev/null \
        || live_server_fail "the script defines no live_server_serving hook"
    local attempt port
    for attempt in 1 2 3; do
        port="$(live_server_free_port)" || live_server_fail "found no free port"
        target="127.0.0.1:$port"
        if [[ -n "$LIVE_SERVER_STDOUT" ]]; then
            "$BINARY" --database-url "$LIVE_DB_URL" serve --listen "$target" "$@" \
                >"$LIVE_SERVER_STDOUT" 2>"$WORK/server.log" &
        else
            "$BINARY" --database-url "$LIVE_DB_URL" serve --listen "$target" "$@" \
                >"$WORK/server.log" 2>&1 &
        fi
        SERVER_PID=$!
        for _ in $(seq 1 100); do
            if ! kill -0 "$SERVER_PID" 2>/dev/null; then
                wait "$SERVER_PID" 2>/dev/null || true
                SERVER_PID=""
                if [[ $attempt -lt 3 ]] && grep -q 'Address already in use' "$WORK/server.log"; then
                    continue 2
                fi
                live_server_fail "the server exited during startup"
            fi
            if live_server_serving "$target" 2>/dev/null; then
                return 0
            fi
            sleep 0.2
        done
        live_server_fail "the server did not become SERVING on $target"
    done
}

# live_server_check LABEL CMD...: runs CMD with the token in the environment
# (HELPDESK_TOKEN, never argv), its output in WORK/check.log; if it fails,
# prints "NAME: LABEL failed:" and that output, and exits 1.
live_server_check() {
    local label=$1
    shift
    HELPDESK_TOKEN="$token" "$@" >"$WORK/check.log" 2>&1 || {
        echo "$LIVE_NAME: $label failed:" >&2
        cat "$WORK/check.log" >&2
        exit 1
    }
}
