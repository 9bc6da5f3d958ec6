#!/usr/bin/env bash
# Runs the whole system here: commcenter-api (HTTP, WebSocket, notifier, outbox relay)
# and commcenter-workers, against the local PostgreSQL and RabbitMQ; with
# FAKE_PROVIDERS=1 (as in .env.example) also commcenter-fakes, the fake RingCentral
# (127.0.0.1:9101) and Gmail (127.0.0.1:9102) the providers' settings then point at.
#
#   scripts/run.sh              release build (first build takes several minutes)
#   RUN_PROFILE=debug scripts/run.sh   debug build (quicker to build, slower to run)
#
# Steps: read .env if present (variables already in the environment win), make sure
# PostgreSQL and RabbitMQ are up (scripts/services.sh: starts them if installed but
# stopped, says what is missing otherwise), build, apply migrations
# (commcenterctl migrate), then run the api and the workers side by side. Ctrl-C or
# SIGTERM is passed to both, which drain and stop; if either exits on its own, the
# other is stopped too and this script exits non-zero.

set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

log() { printf 'run: %s\n' "$*" >&2; }

# Runs a step (build, migrate) so that SIGINT/SIGTERM stop it too, not only this script.
step() {
    "$@" &
    local pid=$!
    trap 'kill -TERM "$pid" 2>/dev/null || true; wait "$pid" || true; log "stopped"; exit 143' INT TERM
    wait "$pid"
    trap - INT TERM
}

# .env: KEY=value lines (the format of .env.example); comments and blanks skipped.
if [[ -f .env ]]; then
    log "reading .env"
    while IFS= read -r line || [[ -n $line ]]; do
        line=${line%$'\r'}
        [[ $line =~ ^[[:space:]]*(#|$) ]] && continue
        line=${line#export }
        key=${line%%=*}
        value=${line#*=}
        if [[ ! $key =~ ^[A-Za-z_][A-Za-z0-9_]*$ || $line != *=* ]]; then
            log ".env: cannot read the line: $line"
            exit 1
        fi
        if [[ $value =~ ^\"(.*)\"$ || $value =~ ^\'(.*)\'$ ]]; then
            value=${BASH_REMATCH[1]}
        fi
        if [[ -z ${!key+set} ]]; then
            export "$key=$value"
        fi
    done < .env
fi

# shellcheck source=scripts/services.sh
. scripts/services.sh

profile=${RUN_PROFILE:-release}
case $profile in
    release) build_flags=(--release) ;;
    debug) build_flags=() ;;
    *) log "RUN_PROFILE must be release or debug, not '$profile'"; exit 1 ;;
esac
packages=(-p commcenter-api -p commcenter-workers)
case ${FAKE_PROVIDERS:-0} in
    1 | true) fakes=1; packages+=(-p commcenter-fakes) ;;
    0 | false | "") fakes= ;;
    *) log "FAKE_PROVIDERS must be 1 or 0, not '$FAKE_PROVIDERS'"; exit 1 ;;
esac
log "building ${packages[*]//-p /} ($profile)"
step cargo build "${build_flags[@]}" "${packages[@]}"
bin=${CARGO_TARGET_DIR:-target}/$profile

log "applying migrations"
step "$bin/commcenterctl" migrate

pids=()
if [[ -n $fakes ]]; then
    "$bin/commcenter-fakes" &
    fake_providers=$!
    pids+=("$fake_providers")
    log "started commcenter-fakes (pid $fake_providers)"
fi
"$bin/commcenter-workers" &
workers=$!
"$bin/commcenter-api" &
api=$!
pids+=("$workers" "$api")
log "started commcenter-workers (pid $workers) and commcenter-api (pid $api, ${API_ADDR:-127.0.0.1:8001})"

stopping=
stop_all() {
    stopping=1
    kill -TERM "${pids[@]}" 2>/dev/null || true
}
trap 'log "stopping (signal)"; stop_all' INT TERM

set +e
wait -n -p first "${pids[@]}"
status=$?
if [[ -z $stopping ]]; then
    case ${first:-} in
        "$api") name=commcenter-api ;;
        "$workers") name=commcenter-workers ;;
        "${fake_providers:-}") name=commcenter-fakes ;;
        *) name="a process" ;;
    esac
    log "$name exited (status $status); stopping the others"
    stop_all
    exit_code=$status
    ((exit_code != 0)) || exit_code=1
else
    exit_code=0
fi
# Wait for all to finish draining (the workers wait up to SHUTDOWN_GRACE_SECS).
for pid in "${pids[@]}"; do
    while kill -0 "$pid" 2>/dev/null; do
        wait "$pid"
    done
done
log "stopped"
exit "$exit_code"
