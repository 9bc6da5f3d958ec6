#!/usr/bin/env bash
# Runs the whole system here: commcenter-api (HTTP, WebSocket, notifier, outbox relay)
# and commcenter-workers, against the local PostgreSQL and RabbitMQ; and, unless real
# provider credentials are given (or FAKE_PROVIDERS=0), commcenter-fakes, the fake
# RingCentral (127.0.0.1:9101) and Gmail (127.0.0.1:9102), or the next free ports, which
# the providers' settings then point at. When everything is ready it prints where it
# is, and writes target/run.env: the shell settings (PATH, $API, tokens) to try it with.
#
#   scripts/run.sh              `local` build: optimised a little, quick to build (Cargo.toml)
#   RUN_PROFILE=release scripts/run.sh   fully optimised, as benchmarks and containers run
#   RUN_PROFILE=debug scripts/run.sh     debug build
#   scripts/run.sh --check      only check the settings (.env, services, providers)
#
# Real provider settings beside FAKE_PROVIDERS=1 are refused (they would send your real
# credentials to the fake servers, and nothing to the real ones). Without JWT_SECRET, a
# random one is made once and kept in target/dev-jwt-secret.
# Steps: read .env if present (variables already in the environment win), make sure
# PostgreSQL and RabbitMQ are up (scripts/services.sh: starts them if installed but
# stopped, says what is missing otherwise), build, apply migrations
# (commcenterctl migrate), then run the api and the workers side by side. Ctrl-C or
# SIGTERM is passed to both, which drain and stop; if either exits on its own, the
# other is stopped too and this script exits non-zero.

set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

log() { printf 'run: %s\n' "$*" >&2; }
fail() {
    printf '\nrun: FAILED: %s\n' "$*" >&2
    exit 1
}

check_only=
case ${1:-} in
    --check) check_only=1 ;;
    "") ;;
    *) fail "unknown argument '$1' (scripts/run.sh, or scripts/run.sh --check)" ;;
esac

# Runs a step (build, migrate) so that SIGINT/SIGTERM stop it too, not only this script.
step() {
    "$@" &
    local pid=$!
    trap 'kill -TERM "$pid" 2>/dev/null || true; wait "$pid" || true; log "stopped"; exit 143' INT TERM
    wait "$pid"
    trap - INT TERM
}

# .env: KEY=value lines (the format of .env.example); comments and blanks skipped.
# DOTENV names another file; DOTENV= reads none.
dotenv=${DOTENV-.env}
if [[ -n $dotenv && -f $dotenv ]]; then
    log "reading $dotenv"
    while IFS= read -r line || [[ -n $line ]]; do
        line=${line%$'\r'}
        [[ $line =~ ^[[:space:]]*(#|$) ]] && continue
        line=${line#export }
        key=${line%%=*}
        value=${line#*=}
        if [[ ! $key =~ ^[A-Za-z_][A-Za-z0-9_]*$ || $line != *=* ]]; then
            log "$dotenv: cannot read the line: $line"
            exit 1
        fi
        if [[ $value =~ ^\"(.*)\"$ || $value =~ ^\'(.*)\'$ ]]; then
            value=${BASH_REMATCH[1]}
        fi
        if [[ -z ${!key+set} ]]; then
            export "$key=$value"
        fi
    done <"$dotenv"
fi

# shellcheck source=scripts/services.sh
. scripts/services.sh

profile=${RUN_PROFILE:-local}
case $profile in
    local) build_flags=(--profile local) ;;
    release) build_flags=(--release) ;;
    debug) build_flags=() ;;
    *) fail "RUN_PROFILE must be local, release or debug, not '$profile'" ;;
esac
packages=(-p commcenter-api -p commcenter-ctl -p commcenter-workers)
# Without provider credentials (no .env, nothing exported), the fake RingCentral and
# Gmail are run too, so SMS and email work out of the box; real credentials switch
# them off (or FAKE_PROVIDERS=0).
if [[ -z ${FAKE_PROVIDERS+set} ]]; then
    if [[ -z ${RINGCENTRAL_CLIENT_ID:-} && -z ${GOOGLE_CLIENT_ID:-} ]]; then
        FAKE_PROVIDERS=1
        log "no provider credentials: running the fake RingCentral and Gmail (FAKE_PROVIDERS=0 to not)"
    else
        FAKE_PROVIDERS=0
    fi
fi
case $FAKE_PROVIDERS in
    1 | true) fakes=1; packages+=(-p commcenter-fakes) ;;
    0 | false | "") fakes= ;;
    *) fail "FAKE_PROVIDERS must be 1 or 0, not '$FAKE_PROVIDERS'" ;;
esac

# With the fakes, every provider setting given must be the fakes' own: a real
# credential, or a URL off this machine, would go to the fake servers (the URLs not
# given point at them), and no real text or email would leave.
if [[ -n $fakes ]]; then
    real=()
    for name in RINGCENTRAL_CLIENT_ID RINGCENTRAL_CLIENT_SECRET RINGCENTRAL_JWT \
        GOOGLE_CLIENT_ID GOOGLE_CLIENT_SECRET GMAIL_REFRESH_TOKEN; do
        value=${!name:-}
        [[ -z $value || $value == fake-* ]] || real+=("$name")
    done
    for name in RINGCENTRAL_SERVER_URL GOOGLE_TOKEN_URL GMAIL_API_URL; do
        value=${!name:-}
        [[ -z $value || $value =~ ^http://(127\.[0-9.]+|localhost)(:[0-9]+)?(/|$) ]] || real+=("$name")
    done
    if ((${#real[@]})); then
        fail "FAKE_PROVIDERS=1 runs a fake RingCentral and Gmail, but ${real[*]} $( ((${#real[@]} == 1)) && echo is || echo are) set to real values, which would go to the fakes.
    To use your real accounts: set FAKE_PROVIDERS=0 (in ${dotenv:-the environment}) and keep only real settings (docs/providers.md).
    To try the fakes: remove ${real[*]} (the fakes' values are filled in)."
    fi
fi

# The api refuses the example JWT_SECRET; a local run gets a random one, kept so that
# tokens stay valid across runs.
if [[ -z ${JWT_SECRET:-} ]]; then
    secret_file=${CARGO_TARGET_DIR:-target}/dev-jwt-secret
    if [[ ! -s $secret_file ]]; then
        mkdir -p "$(dirname "$secret_file")"
        (umask 077 && od -An -N32 -tx1 /dev/urandom | tr -d ' \n' >"$secret_file")
        log "no JWT_SECRET: made a random one for local runs ($secret_file)"
    fi
    JWT_SECRET=$(<"$secret_file")
    export JWT_SECRET
fi

if [[ -n $check_only ]]; then
    if [[ -n $fakes ]]; then
        log "settings checked: fake RingCentral and Gmail (FAKE_PROVIDERS=1)"
    else
        log "settings checked: RingCentral ${RINGCENTRAL_SERVER_URL:-https://platform.ringcentral.com}, Gmail ${GMAIL_API_URL:-https://gmail.googleapis.com} (FAKE_PROVIDERS=0)"
    fi
    exit 0
fi

# Is something listening on 127.0.0.1:PORT?
port_taken() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# PORT, or the next free one after it.
free_port_from() {
    local port=$1
    while port_taken "$port"; do
        port=$((port + 1))
    done
    printf '%s\n' "$port"
}

if [[ -n $fakes ]]; then
    # The fakes' ports: the usual ones, or the next free ones (said so), and every
    # provider setting not given points at them.
    if [[ -z ${FAKE_RINGCENTRAL_ADDR:-} ]]; then
        port=$(free_port_from 9101)
        [[ $port == 9101 ]] || log "port 9101 is taken; the fake RingCentral listens on $port (set FAKE_RINGCENTRAL_ADDR to choose)"
        export FAKE_RINGCENTRAL_ADDR=127.0.0.1:$port
    fi
    if [[ -z ${FAKE_GMAIL_ADDR:-} ]]; then
        port=$(free_port_from 9102)
        [[ $port != "${FAKE_RINGCENTRAL_ADDR##*:}" ]] || port=$(free_port_from $((port + 1)))
        [[ $port == 9102 ]] || log "port 9102 is taken; the fake Gmail listens on $port (set FAKE_GMAIL_ADDR to choose)"
        export FAKE_GMAIL_ADDR=127.0.0.1:$port
    fi
    : "${RINGCENTRAL_SERVER_URL:=http://$FAKE_RINGCENTRAL_ADDR}"
    : "${RINGCENTRAL_CLIENT_ID:=fake-rc-client-id}"
    : "${RINGCENTRAL_CLIENT_SECRET:=fake-rc-client-secret}"
    : "${RINGCENTRAL_JWT:=fake-rc-jwt}"
    : "${RINGCENTRAL_FROM_NUMBER:=+16505550100}"
    : "${RINGCENTRAL_WEBHOOK_TOKEN:=change-me-webhook-token}"
    : "${GOOGLE_CLIENT_ID:=fake-google-client-id.apps.googleusercontent.com}"
    : "${GOOGLE_CLIENT_SECRET:=fake-google-client-secret}"
    : "${GOOGLE_TOKEN_URL:=http://$FAKE_GMAIL_ADDR/token}"
    : "${GMAIL_API_URL:=http://$FAKE_GMAIL_ADDR}"
    : "${GMAIL_REFRESH_TOKEN:=fake-gmail-refresh-token}"
    : "${GMAIL_SENDER:=office@example.com}"
    # With fakes, things happen in a person's time: new mail is read every 5 s, and an
    # in-app message unread for 10 s falls back (customers may set their own delay).
    : "${GMAIL_POLL_SECS:=5}"
    : "${FALLBACK_AFTER_SECS:=10}"
    export RINGCENTRAL_SERVER_URL RINGCENTRAL_CLIENT_ID RINGCENTRAL_CLIENT_SECRET RINGCENTRAL_JWT \
        RINGCENTRAL_FROM_NUMBER RINGCENTRAL_WEBHOOK_TOKEN GOOGLE_CLIENT_ID GOOGLE_CLIENT_SECRET \
        GOOGLE_TOKEN_URL GMAIL_API_URL GMAIL_REFRESH_TOKEN GMAIL_SENDER GMAIL_POLL_SECS \
        FALLBACK_AFTER_SECS
fi
api_addr=${API_ADDR:-127.0.0.1:8001}
if port_taken "${api_addr##*:}"; then
    fail "${api_addr} is taken (another Commcenter?); stop it, or set API_ADDR=127.0.0.1:8002"
fi
log "building ${packages[*]//-p /} ($profile)"
step cargo build "${build_flags[@]}" "${packages[@]}"
bin=${CARGO_TARGET_DIR:-target}/$profile

log "applying migrations"
step "$bin/commcenterctl" migrate

# Waits until something listens on host:port, while PID lives (30 s at most).
wait_listening() {
    local addr=$1 pid=$2 name=$3
    for _ in $(seq 1 300); do
        (exec 3<>"/dev/tcp/${addr%:*}/${addr##*:}") 2>/dev/null && return 0
        kill -0 "$pid" 2>/dev/null || { log "FAILED: $name exited at start (see above)"; return 1; }
        sleep 0.1
    done
    log "FAILED: $name did not listen on $addr within 30 s"
    return 1
}

pids=()
stop_started() { kill -TERM "${pids[@]}" 2>/dev/null || true; wait; }
if [[ -n $fakes ]]; then
    "$bin/commcenter-fakes" >/dev/null &
    fake_providers=$!
    pids+=("$fake_providers")
    wait_listening "$FAKE_RINGCENTRAL_ADDR" "$fake_providers" commcenter-fakes &&
        wait_listening "$FAKE_GMAIL_ADDR" "$fake_providers" commcenter-fakes || { stop_started; exit 1; }
fi
"$bin/commcenter-workers" &
workers=$!
"$bin/commcenter-api" &
api=$!
pids+=("$workers" "$api")
wait_listening "$api_addr" "$api" commcenter-api || { stop_started; exit 1; }
for _ in $(seq 1 100); do
    curl -sf "http://$api_addr/readyz" >/dev/null 2>&1 && break
    sleep 0.2
done

# Ready: where things are, and target/run.env, the shell settings the walk-throughs
# use (PATH for commcenterctl, the api's URL, tokens, the fakes' URLs and settings).
ctl=$bin/commcenterctl
token() { "$ctl" token "$@" || { log "FAILED: commcenterctl token $*"; echo "token-not-made"; }; }
run_env=${RUN_ENV:-target/run.env}
mkdir -p "$(dirname "$run_env")"
{
    printf '# Written by scripts/run.sh at %s; load it with: . %s\n' "$(date -u +%FT%TZ)" "$run_env"
    printf 'export PATH="%s:$PATH"\n' "$(cd "$bin" && pwd)"
    printf 'export API=http://%s COMMCENTER_API_URL=http://%s\n' "$api_addr" "$api_addr"
    [[ -z ${JWT_SECRET:-} ]] || printf 'export JWT_SECRET=%q\n' "$JWT_SECRET"
    printf 'export STAFF=%s\n' "$(token --user staff-1 --role staff)"
    printf 'export ALICE=%s\n' "$(token --user alice --role customer --customer cust-42)"
    printf 'export BOB=%s\n' "$(token --user bob --role customer --customer cust-7)"
    printf 'export OPERATOR=%s\n' "$(token --user ops-1 --role operator)"
    printf 'export UPLOAD_DIR=%q\n' "$(realpath -m "${UPLOAD_DIR:-var/uploads}")"
    if [[ -n $fakes ]]; then
        printf 'export RINGCENTRAL_FAKE=http://%s GMAIL_FAKE=http://%s\n' "$FAKE_RINGCENTRAL_ADDR" "$FAKE_GMAIL_ADDR"
        # commcenterctl ringcentral subscribe reads these, as the workers do.
        for name in RINGCENTRAL_SERVER_URL RINGCENTRAL_CLIENT_ID RINGCENTRAL_CLIENT_SECRET RINGCENTRAL_JWT \
            RINGCENTRAL_FROM_NUMBER RINGCENTRAL_WEBHOOK_TOKEN; do
            printf 'export %s=%q\n' "$name" "${!name}"
        done
    fi
} >"$run_env"
{
    printf '\n  Commcenter is running (Ctrl-C stops it)\n\n'
    printf '  api       http://%s   (WebSocket ws://%s/api/ws/{user_id}?token=...)\n' "$api_addr" "$api_addr"
    printf '  console   http://%s/ops   (paste $OPERATOR)\n' "$api_addr"
    printf '  analytics http://%s/ops/analytics   (paste $STAFF)\n' "$api_addr"
    printf '  portal    http://%s/portal   (paste $ALICE, or $STAFF in another browser)\n' "$api_addr"
    if [[ -n $fakes ]]; then
        printf '  fakes     RingCentral http://%s, Gmail http://%s\n' "$FAKE_RINGCENTRAL_ADDR" "$FAKE_GMAIL_ADDR"
    fi
    printf '\n  In another shell, at the repository root:\n\n'
    printf '    . %s   # commcenterctl on PATH; $API; tokens $STAFF, $ALICE, $BOB, $OPERATOR\n\n' "$run_env"
} >&2

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
rm -f "$run_env"
log "stopped"
exit "$exit_code"
