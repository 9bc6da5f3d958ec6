#!/usr/bin/env bash
# Makes sure the two servers Commcenter needs are up: PostgreSQL and RabbitMQ.
#
# For each: if it answers, nothing is done. If it does not answer and it is installed
# here, it is started (as the machine's own start commands do) and waited for, up to
# SERVICES_WAIT_SECS (default 60). If it is not installed and this runs as root on
# Debian or Ubuntu, it is installed from the distribution's packages first (PostgreSQL
# then gets a superuser role for DATABASE_URL's user and trust on loopback, as a
# development machine has). Otherwise this fails loudly, naming what is missing and how
# to get it. It never stops anything and never changes a server it did not install.
#
# Where to look comes from DATABASE_URL and AMQP_URL (the app's own variables, default
# 127.0.0.1:5432 and 127.0.0.1:5672). Servers that are not on loopback are only checked,
# never started.
#
# Run it (`scripts/services.sh`) or source it (`. scripts/services.sh`, as run.sh does).

set -euo pipefail

services_log() { printf 'services: %s\n' "$*" >&2; }
services_fail() {
    printf '\nservices: FAILED: %s\n' "$*" >&2
    exit 1
}

# Prints "host port" of a URL such as postgres://user:pw@host:5432/db?x=y.
services_host_port() {
    local url=$1 default_port=$2 rest hostport host port
    rest=${url#*://}
    rest=${rest%%/*}
    rest=${rest%%\?*}
    hostport=${rest##*@}
    if [[ $hostport == \[* ]]; then            # [::1]:5432
        host=${hostport%%]*}; host=${host#[}
        port=${hostport##*]}; port=${port#:}
    elif [[ $hostport == *:* ]]; then
        host=${hostport%%:*}; port=${hostport##*:}
    else
        host=$hostport; port=
    fi
    printf '%s %s\n' "${host:-127.0.0.1}" "${port:-$default_port}"
}

# Installs Debian packages when this runs as root with apt-get (a fresh machine);
# returns 1 otherwise, so the caller names the command to run instead.
services_apt_install() {
    [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1 || return 1
    services_log "installing $* (apt-get, the distribution's packages)"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

services_is_local() {
    case $1 in 127.*|localhost|::1) return 0 ;; *) return 1 ;; esac
}

# A TCP connection to host:port within 3 seconds.
services_tcp_open() {
    timeout 3 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$1" "$2" 2>/dev/null
}

# The AMQP 0-9-1 handshake: the broker answers our protocol header with a
# Connection.Start frame (frame type 1). Proves it is RabbitMQ and that it is ready.
services_amqp_answers() {
    local first
    first=$(timeout 5 bash -c '
        exec 3<>"/dev/tcp/$1/$2" || exit 1
        printf "AMQP\x00\x00\x09\x01" >&3
        head -c 1 <&3' _ "$1" "$2" 2>/dev/null | od -An -tx1 | tr -d ' \n') || true
    [[ $first == 01 ]]
}

services_pg_answers() {
    if command -v pg_isready >/dev/null 2>&1; then
        pg_isready -q -h "$1" -p "$2" -t 3
    else
        services_tcp_open "$1" "$2"
    fi
}

# Waits until "$@" succeeds, at most SERVICES_WAIT_SECS; returns 1 if it never did.
services_wait_for() {
    local what=$1; shift
    local deadline=$((SECONDS + ${SERVICES_WAIT_SECS:-60}))
    until "$@"; do
        if ((SECONDS >= deadline)); then
            return 1
        fi
        sleep 1
    done
    services_log "$what is up"
}

services_postgres() {
    local url=${DATABASE_URL:-postgres://root@127.0.0.1:5432/commcenter}
    local host port
    read -r host port < <(services_host_port "$url" 5432)
    if services_pg_answers "$host" "$port"; then
        services_log "PostgreSQL answers on $host:$port"
    else
        services_is_local "$host" ||
            services_fail "PostgreSQL does not answer on $host:$port (DATABASE_URL), and it is not on this machine, so it cannot be started from here."
        local installed_here=
        if ! command -v pg_ctlcluster >/dev/null 2>&1 || [[ ! -d /etc/postgresql ]] || [[ -z $(ls -A /etc/postgresql) ]]; then
            services_apt_install postgresql ||
                services_fail "PostgreSQL does not answer on $host:$port and is not installed here.
    Install it:  apt-get install -y postgresql   (Debian package; provides pg_ctlcluster and a 'main' cluster)
    Or run it in a container: docker compose up -d postgres (see compose.yaml), and set DATABASE_URL."
            installed_here=1
        fi
        local version
        version=$(ls /etc/postgresql | sort -V | tail -n 1)
        services_log "PostgreSQL does not answer on $host:$port; starting cluster $version/main"
        pg_ctlcluster --skip-systemctl-redirect "$version" main start ||
            services_log "pg_ctlcluster returned an error (it may already be starting); waiting anyway"
        services_wait_for "PostgreSQL" services_pg_answers "$host" "$port" ||
            services_fail "PostgreSQL was started but did not answer on $host:$port within ${SERVICES_WAIT_SECS:-60}s.
    Look at: /var/log/postgresql/postgresql-$version-main.log"
        [[ -z $installed_here ]] || services_pg_open_for_development "$url" "$version"
    fi
    # Answering is not enough: the role in DATABASE_URL must be able to log in. The
    # database itself may be missing (the api and workers create it), so check `postgres`.
    if command -v psql >/dev/null 2>&1; then
        local base=${url%%\?*}
        base=${base%/*}
        local error
        if ! error=$(psql "$base/postgres" -Atqc 'SELECT 1' 2>&1 >/dev/null); then
            services_fail "PostgreSQL answers on $host:$port but the DATABASE_URL login is refused:
    $error
    On a fresh Debian install, create the role and let loopback in, e.g.:
      su postgres -c 'createuser --superuser root'   (and 'trust' or a password for 127.0.0.1 in pg_hba.conf)"
        fi
    fi
}

# On a cluster this script just installed: DATABASE_URL's user as a superuser, and
# trust for loopback connections (Debian's default asks for a password there).
services_pg_open_for_development() {
    local url=$1 version=$2 cluster=${3:-main} rest user hba
    rest=${url#*://}
    user=root
    if [[ ${rest%%/*} == *@* ]]; then
        user=${rest%%@*}
        user=${user%%:*}
    fi
    services_log "setting up the new cluster for development: role '$user' (superuser), trust on loopback"
    printf 'DO $$ BEGIN CREATE ROLE "%s" SUPERUSER LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$;\n' "$user" |
        su postgres -c "psql -q -v ON_ERROR_STOP=1 --cluster $version/$cluster"
    hba=/etc/postgresql/$version/$cluster/pg_hba.conf
    printf '# Added by scripts/services.sh (a development machine): loopback without a password.\nhost all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\n%s\n' "$(cat "$hba")" >"$hba"
    pg_ctlcluster --skip-systemctl-redirect "$version" "$cluster" reload
}

services_rabbitmq() {
    local url=${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}
    local host port
    read -r host port < <(services_host_port "$url" 5672)
    if services_amqp_answers "$host" "$port"; then
        services_log "RabbitMQ answers on $host:$port"
        return 0
    fi
    services_is_local "$host" ||
        services_fail "RabbitMQ does not answer on $host:$port (AMQP_URL), and it is not on this machine, so it cannot be started from here."
    if ! command -v rabbitmq-server >/dev/null 2>&1; then
        services_apt_install rabbitmq-server ||
            services_fail "RabbitMQ does not answer on $host:$port and is not installed here.
    Install it:  apt-get install -y rabbitmq-server   (Debian package; 3.10 on Debian 12)
    Or run it in a container: docker compose up -d rabbitmq (see compose.yaml), and set AMQP_URL."
    fi
    # The node may be running but still booting (or listening elsewhere): ask it first,
    # so a second node is never started beside it.
    if command -v rabbitmq-diagnostics >/dev/null 2>&1 && rabbitmq-diagnostics -q ping >/dev/null 2>&1; then
        services_log "the RabbitMQ node is running but AMQP does not answer on $host:$port yet; waiting"
    else
        services_log "RabbitMQ does not answer on $host:$port; starting it (rabbitmq-server -detached)"
        rabbitmq-server -detached ||
            services_log "rabbitmq-server -detached returned an error (it may already be starting); waiting anyway"
    fi
    services_wait_for "RabbitMQ" services_amqp_answers "$host" "$port" ||
        services_fail "RabbitMQ was started but AMQP did not answer on $host:$port within ${SERVICES_WAIT_SECS:-60}s.
    Look at: rabbitmq-diagnostics status, and /var/log/rabbitmq/"
}

services_postgres
services_rabbitmq
