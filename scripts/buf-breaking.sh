#!/usr/bin/env bash
# buf breaking: proto/ as it is in the work tree against proto/ at an earlier
# commit, read from this repository's .git. The rules are buf.yaml's
# `breaking` section (FILE: generated code must keep compiling).
#
#   scripts/buf-breaking.sh [REF]      (default: HEAD~1, the previous commit)
#
# With no such commit (the first commit, or a shallow clone whose parent
# cannot be fetched) it compares against HEAD and says so, except under
# CI=true, where that would check nothing and it fails instead. If proto/
# did not exist at REF there is nothing to break and it says that. Uses buf from .tools/buf (or $BUF).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

BUF="${BUF:-.tools/buf/node_modules/.bin/buf}"
[[ -x "$BUF" ]] || { echo "buf-breaking: $BUF not found (make test installs it)" >&2; exit 1; }
ref="${1:-HEAD~1}"

if ! commit="$(git rev-parse --verify --quiet "$ref^{commit}")"; then
    if [[ $# -gt 0 ]]; then
        echo "buf-breaking: no commit $ref" >&2
        exit 1
    fi
    # A shallow clone may just lack the parent: try to fetch it.
    if [[ "$(git rev-parse --is-shallow-repository)" == true ]]; then
        git fetch --quiet --deepen=1 2>/dev/null || true
    fi
    if ! commit="$(git rev-parse --verify --quiet "$ref^{commit}")"; then
        # Under CI a comparison of HEAD with itself would pass without
        # checking anything: refuse instead.
        if [[ "${CI:-false}" == true ]]; then
            echo "buf-breaking: no commit $ref to compare against (shallow clone?); CI=true needs one" >&2
            exit 1
        fi
        echo "buf-breaking: no commit $ref (first commit or shallow clone); comparing against HEAD"
        ref=HEAD
        commit="$(git rev-parse --verify "HEAD^{commit}")"
    fi
fi
if ! git cat-file -e "$commit:proto" 2>/dev/null; then
    echo "buf-breaking: $ref ($(git rev-parse --short "$commit")) has no proto/; nothing to compare against"
    exit 0
fi

# Pass the hash git resolved here rather than "HEAD~1": buf fetches the ref
# from .git on its own, and a hash leaves it no room to read it otherwise.
against="$ref ($(git rev-parse --short "$commit"))"
if "$BUF" breaking proto --against ".git#ref=$commit,subdir=proto"; then
    echo "buf-breaking: proto/ has no breaking change against $against"
else
    status=$?
    # buf exits 100 when it found breaking changes; anything else is an error.
    if [[ $status -eq 100 ]]; then
        echo "buf-breaking: proto/ has breaking changes against $against (listed above)" >&2
    else
        echo "buf-breaking: buf failed (exit $status)" >&2
    fi
    exit "$status"
fi
