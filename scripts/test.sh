#!/usr/bin/env bash
# Every test: the unit tests and the end-to-end suites, against the real PostgreSQL and
# RabbitMQ. Sets up what they need on a Debian/Ubuntu machine with a Rust toolchain:
#
#   - PostgreSQL and RabbitMQ: started if installed but stopped (scripts/services.sh);
#   - moto, the S3-compatible test server: pinned, in a virtualenv under target/;
#   - Chromium and playwright-core, for the browser test of the /ops console;
#   - jq and file, for the walk-through, which the whole suite runs at the end
#     (scripts/check-walkthrough.sh: docs/walkthrough.md against a system of its own).
#
# What is missing is installed when it can be (apt as root, pip into the venv, npm);
# otherwise this stops with the exact command to run. Every test binary runs even when
# one fails (--no-fail-fast), and the summary of each is printed at the end. Test
# databases and queues that a failed run left behind are removed.
#
#   scripts/test.sh                  # everything
#   scripts/test.sh -p commcenter-tests --test e2e -- realtime   # a part (cargo test arguments)

set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

log() { printf 'test: %s\n' "$*" >&2; }
fail() {
    printf '\ntest: FAILED: %s\n' "$*" >&2
    exit 1
}
root() { [[ $(id -u) == 0 ]]; }
apt_install() {
    root || fail "$* is missing; install it: sudo apt-get install -y $*"
    log "installing $* (apt)"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

scripts/services.sh

# moto 5.2.2 or later (older ones answer CompleteMultipartUpload in XML S3 clients
# refuses), pinned, in a virtualenv of the project's: the system's Python is left alone.
MOTO_VERSION=5.2.5
venv=target/test-venv
if ! "$venv/bin/python" -c "import moto, sys; sys.exit(moto.__version__ != '$MOTO_VERSION')" >/dev/null 2>&1; then
    command -v python3 >/dev/null 2>&1 || apt_install python3 python3-venv
    if ! python3 -m venv "$venv" >/dev/null 2>&1; then
        apt_install python3-venv
        python3 -m venv "$venv"
    fi
    log "installing moto[server]==$MOTO_VERSION into $venv"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check "moto[server]==$MOTO_VERSION" ||
        fail "could not install moto; run: $venv/bin/python -m pip install 'moto[server]==$MOTO_VERSION'"
fi
export MOTO_PYTHON=$PWD/$venv/bin/python

# The console's browser test drives Debian's Chromium with playwright-core.
if [[ -z ${CHROMIUM:-} && ! -x /usr/bin/chromium ]]; then
    apt_install chromium
fi
command -v npm >/dev/null 2>&1 || apt_install nodejs npm
if [[ ! -d tests/browser/node_modules/playwright-core ]] ||
    [[ tests/browser/package-lock.json -nt tests/browser/node_modules/.package-lock.json ]]; then
    log "installing playwright-core (npm ci in tests/browser)"
    npm ci --prefix tests/browser --no-audit --no-fund --loglevel=error >/dev/null ||
        fail "npm ci failed; run: npm ci --prefix tests/browser"
fi

# The walk-through check (scripts/check-walkthrough.sh) reads answers with jq and file.
for tool in jq file; do
    command -v "$tool" >/dev/null 2>&1 || apt_install "$tool"
done
# A test reads the api's listen backlog with ss.
command -v ss >/dev/null 2>&1 || apt_install iproute2

# Each test makes a database cc_test_<id> and a queue prefix cc-test-<id>, removed when
# it ends, even when it fails; tests that stop PostgreSQL for real make clusters of their
# own (cc_scratch_<id>, with Debian's pg_createcluster) and drop them. A run killed
# midway leaves them. Every id of this run starts with CC_TEST_RUN, so at the end this
# run removes what it left, and never what another run beside it is still using.
CC_TEST_RUN=$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')
export CC_TEST_RUN
admin_url=${TEST_DATABASE_URL:-postgres://root@127.0.0.1:5432/postgres}
left_databases() {
    psql "$admin_url" -Atqc "SELECT datname FROM pg_database WHERE datname LIKE 'cc\_test\_$CC_TEST_RUN%' ORDER BY 1" 2>/dev/null || true
}
left_clusters() {
    pg_lsclusters --no-header 2>/dev/null | awk -v name="cc_scratch_$CC_TEST_RUN" 'index($2, name) == 1 {print $1 "/" $2}' | sort
}

args=("$@")
if [[ ${#args[@]} == 0 ]]; then
    args=(--workspace)
fi
has_separator=0
for arg in "${args[@]}"; do [[ $arg == -- ]] && has_separator=1; done
if [[ $has_separator == 0 ]]; then
    args+=(--)
fi
output=$(mktemp)
status=0
cargo test --no-fail-fast "${args[@]}" --test-threads=6 2>&1 | tee "$output" || status=$?

for database in $(left_databases); do
    log "removing $database, left by a test of this run"
    psql "$admin_url" -qc "DROP DATABASE IF EXISTS \"$database\" WITH (FORCE)" >/dev/null 2>&1 || true
    prefix=cc-test-${database#cc_test_}
    scripts/remove-test-topology.sh "$prefix"
done
for cluster in $(left_clusters); do
    log "removing the PostgreSQL cluster $cluster, left by a test of this run"
    pg_dropcluster --stop "${cluster%%/*}" "${cluster#*/}" || true
done

# The whole suite also runs the walk-through (docs/walkthrough.md) against a system of
# its own, as a newcomer would.
walkthrough="not run (a part of the tests was asked for)"
if [[ ${#@} == 0 ]]; then
    printf '\n==> scripts/check-walkthrough.sh\n'
    if scripts/check-walkthrough.sh; then
        walkthrough="ran as written"
    else
        walkthrough="FAILED"
        status=1
    fi
fi

printf '\n==> summary\n'
awk '/^ *Running /{name=$2} /^ *Doc-tests /{name="doc-tests "$2} /^test result:/{print name": "$0}' "$output"
printf 'docs/walkthrough.md: %s\n' "$walkthrough"
rm -f "$output"
if [[ $status != 0 ]]; then
    fail "some tests failed (see above)"
fi
printf 'test: all passed\n'
