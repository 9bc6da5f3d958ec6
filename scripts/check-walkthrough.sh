#!/usr/bin/env bash
# Checks that the walk-through's commands still run: starts a Commcenter of its own with
# scripts/run.sh (its own database, queue prefix, upload directory, api port and fake
# providers; a debug build unless RUN_PROFILE=release), runs every ```sh block of
# README.md's tour, then of docs/walkthrough.md, in order, each file in one shell
# (scripts/walkthrough.py), then stops the system and removes everything it made,
# whatever happened. (```bash blocks are shown, not run: the two commands themselves.)
#
#   scripts/check-walkthrough.sh            # check
#   scripts/check-walkthrough.sh --write    # check, and write each block's output into the docs

set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

log() { printf 'check-walkthrough: %s\n' "$*" >&2; }
fail() {
    printf 'check-walkthrough: FAILED: %s\n' "$*" >&2
    exit 1
}
command -v jq >/dev/null 2>&1 || fail "jq is missing; install it: sudo apt-get install -y jq"
command -v file >/dev/null 2>&1 || fail "file is missing; install it: sudo apt-get install -y file"

. scripts/services.sh

id=$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')
scratch=$(mktemp -d)
port=8001
while (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do port=$((port + 1)); done
admin_url=${TEST_DATABASE_URL:-postgres://root@127.0.0.1:5432/postgres}
database=cc_walkthrough_$id
prefix=cc-walkthrough-$id
run_env=$scratch/run.env

# This system's settings only: no .env, fakes on free ports, nothing shared.
export DOTENV= FAKE_PROVIDERS=1 RUN_ENV=$run_env RUN_PROFILE=${RUN_PROFILE:-debug}
export API_ADDR=127.0.0.1:$port QUEUE_PREFIX=$prefix UPLOAD_DIR=$scratch/uploads
export DATABASE_URL=${admin_url%/*}/$database JWT_SECRET=walkthrough-$id-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n') METRICS_ADDR=0
export RUST_LOG=${RUST_LOG:-warn}
unset RINGCENTRAL_CLIENT_ID GOOGLE_CLIENT_ID FAKE_RINGCENTRAL_ADDR FAKE_GMAIL_ADDR

system=
cleanup() {
    local status=$?
    if [[ -n $system ]]; then
        kill -TERM "$system" 2>/dev/null || true
        wait "$system" 2>/dev/null || true
    fi
    psql "$admin_url" -qc "DROP DATABASE IF EXISTS \"$database\" WITH (FORCE)" >/dev/null 2>&1 || true
    scripts/remove-test-topology.sh "$prefix"
    rm -rf "$scratch"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log "starting a Commcenter of its own on $API_ADDR (scripts/run.sh, $RUN_PROFILE build)"
scripts/run.sh >"$scratch/system.log" 2>&1 &
system=$!
until [[ -f $run_env ]]; do
    if ! kill -0 "$system" 2>/dev/null; then
        cat "$scratch/system.log" >&2
        system=
        fail "scripts/run.sh stopped before it was ready (its output is above)"
    fi
    sleep 1
done

for doc in README.md docs/walkthrough.md; do
    if ! scripts/walkthrough.py "$doc" --env "$run_env" "$@"; then
        log "the system's log:"
        tail -n 40 "$scratch/system.log" >&2
        fail "$doc no longer runs as written"
    fi
done
