#!/usr/bin/env bash
# services.sh - a RabbitMQ 3.10 and a PostgreSQL 15 of the project's own, for demos and tests.
#
# Usage: scripts/services.sh start|stop|restart|status|env [--tls]|psql [ARGS...]|reset-db|tls|help
#
# Everything lives in one folder (default <repo>/.services, override TOOLBOX_SERVICES_DIR) and listens
# on 127.0.0.1 only, on ports of its own, so nothing clashes with a system RabbitMQ or PostgreSQL.
# `stop` stops only what `start` started: RabbitMQ through `rabbitmqctl -n NODE stop` (and its private
# epmd through `epmd -kill` on its private port), PostgreSQL through `pg_ctl stop` on its data folder.
# Runs as root (it starts PostgreSQL as the `postgres` system user through runuser).
#
# TLS (opt-in; the plain listeners always stay as they are): `tls` makes a test certificate authority, a
# server certificate (localhost, 127.0.0.1) and a client certificate in <services>/tls/, adds a TLS listener
# to RabbitMQ (amqps, port TOOLBOX_AMQPS_PORT) and turns on TLS in PostgreSQL (same port; hostssl lines).
# PostgreSQL takes it with a reload; RabbitMQ gets the listener started inside the running node (a restart
# only if that fails). `start` sets TLS up from the beginning when TOOLBOX_TLS=1, or when <services>/tls
# already holds certificates (TOOLBOX_TLS=0 leaves it off). `env --tls` prints the amqps:// and
# sslmode=verify-full settings. Client certificates are checked when presented and required only with
# TOOLBOX_TLS_CLIENT_CERT=required.
#
# Environment (all optional):
#   TOOLBOX_SERVICES_DIR        folder for data, logs, sockets, pid files   (<repo>/.services, or
#                               /var/tmp/toolbox-services-<hash> when the repo is not world-traversable)
#   TOOLBOX_AMQP_PORT           AMQP port                                   (35672)
#   TOOLBOX_RABBIT_DIST_PORT    Erlang distribution port of the node        (AMQP port + 10000)
#   TOOLBOX_EPMD_PORT           port of the node's private epmd             (AMQP port + 10011)
#   TOOLBOX_RABBIT_NODE         Erlang node name                            (toolbox@localhost)
#   TOOLBOX_PG_PORT             PostgreSQL port                             (35432)
#   TOOLBOX_PG_BINDIR           PostgreSQL server binaries                  (/usr/lib/postgresql/15/bin)
#   TOOLBOX_PG_DB               database                                    (cadasta)
#   TOOLBOX_PG_OWNER            owner role / its password                   (toolbox / toolbox)
#   TOOLBOX_PG_OWNER_PASSWORD
#   TOOLBOX_PG_WORKER           worker role / its password                  (worker / cadasta)
#   TOOLBOX_PG_WORKER_PASSWORD
#   TOOLBOX_PG_MONITOR, TOOLBOX_PG_MONITOR_PASSWORD  the platform monitor's role (monitor/monitor)
#   TOOLBOX_RABBIT_TIMEOUT      seconds to wait for RabbitMQ                (90)
#   TOOLBOX_PG_TIMEOUT          seconds to wait for PostgreSQL              (60)
#   TOOLBOX_TLS                 1: TLS listeners too; 0: none               (1 if <services>/tls has certs)
#   TOOLBOX_AMQPS_PORT          AMQP over TLS port                          (AMQP port - 1)
#   TOOLBOX_TLS_CLIENT_CERT     optional: verified when presented;          (optional)
#                               required: TLS clients must present one

set -euo pipefail

PROG=${0##*/}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)

# The postgres system user must reach the data folder. A checkout under a private folder (a fresh CI
# clone in a mktemp directory, say) gets its services in a folder of its own under /var/tmp instead.
world_traversable() {
    local d=$1
    while [[ -n $d && $d != / ]]; do
        [[ -e $d ]] && [[ $(stat -c %A "$d") != *x ]] && return 1
        d=$(dirname "$d")
    done
    return 0
}
if [[ -n ${TOOLBOX_SERVICES_DIR:-} ]]; then
    SERVICES_DIR=$TOOLBOX_SERVICES_DIR
elif world_traversable "$REPO"; then
    SERVICES_DIR=$REPO/.services
else
    SERVICES_DIR=/var/tmp/toolbox-services-$(printf '%s' "$REPO" | md5sum | cut -c1-8)
fi
AMQP_PORT=${TOOLBOX_AMQP_PORT:-35672}
PG_PORT=${TOOLBOX_PG_PORT:-35432}
RABBIT_TIMEOUT=${TOOLBOX_RABBIT_TIMEOUT:-90}
PG_TIMEOUT=${TOOLBOX_PG_TIMEOUT:-60}
PG_DB=${TOOLBOX_PG_DB:-cadasta}
PG_OWNER=${TOOLBOX_PG_OWNER:-toolbox}
PG_OWNER_PASSWORD=${TOOLBOX_PG_OWNER_PASSWORD:-toolbox}
PG_WORKER=${TOOLBOX_PG_WORKER:-worker}
PG_WORKER_PASSWORD=${TOOLBOX_PG_WORKER_PASSWORD:-cadasta}
PG_MONITOR=${TOOLBOX_PG_MONITOR:-monitor}
PG_MONITOR_PASSWORD=${TOOLBOX_PG_MONITOR_PASSWORD:-monitor}
PG_BINDIR=${TOOLBOX_PG_BINDIR:-/usr/lib/postgresql/15/bin}
PG_SYSUSER=postgres
RABBIT_BINDIR=/usr/lib/rabbitmq/bin
RABBIT_NODE=${TOOLBOX_RABBIT_NODE:-toolbox@localhost}

die() { printf '%s: error: %s\n' "$PROG" "$*" >&2; exit 1; }
say() { printf '%s: %s\n' "$PROG" "$*"; }
warn() { printf '%s: warning: %s\n' "$PROG" "$*" >&2; }

is_port() { [[ $1 =~ ^[0-9]+$ ]] && (($1 > 0 && $1 < 65536)); }
is_uint() { [[ $1 =~ ^[0-9]+$ ]]; }

is_port "$AMQP_PORT" || die "TOOLBOX_AMQP_PORT is not a port number: '$AMQP_PORT'"
is_port "$PG_PORT" || die "TOOLBOX_PG_PORT is not a port number: '$PG_PORT'"
DIST_PORT=${TOOLBOX_RABBIT_DIST_PORT:-$((AMQP_PORT + 10000))}
EPMD_PORT=${TOOLBOX_EPMD_PORT:-$((AMQP_PORT + 10011))}
# rabbitmqctl is itself an Erlang node; by default it listens on 35672-35682, which is exactly our AMQP
# port, and would race the broker for it during startup. Give the CLI a range of its own.
CTL_DIST_MIN=$((DIST_PORT + 1))
CTL_DIST_MAX=$((DIST_PORT + 10))
is_port "$DIST_PORT" || die "Erlang distribution port out of range: '$DIST_PORT' (set TOOLBOX_RABBIT_DIST_PORT)"
is_port "$CTL_DIST_MAX" || die "CLI distribution ports $CTL_DIST_MIN-$CTL_DIST_MAX out of range (set TOOLBOX_RABBIT_DIST_PORT)"
is_port "$EPMD_PORT" || die "epmd port out of range: '$EPMD_PORT' (set TOOLBOX_EPMD_PORT)"
is_uint "$RABBIT_TIMEOUT" || die "TOOLBOX_RABBIT_TIMEOUT is not a number of seconds: '$RABBIT_TIMEOUT'"
is_uint "$PG_TIMEOUT" || die "TOOLBOX_PG_TIMEOUT is not a number of seconds: '$PG_TIMEOUT'"
[[ $SERVICES_DIR == /* ]] || SERVICES_DIR=$PWD/$SERVICES_DIR
AMQPS_PORT=${TOOLBOX_AMQPS_PORT:-$((AMQP_PORT - 1))}
# The management plugin's HTTP API (read-only use: the conformance suite reads the bindings there).
MGMT_PORT=${TOOLBOX_MGMT_PORT:-$((AMQP_PORT + 1))}
is_port "$AMQPS_PORT" || die "TOOLBOX_AMQPS_PORT is not a port number: '$AMQPS_PORT'"
[[ $AMQPS_PORT != "$AMQP_PORT" && $AMQPS_PORT != "$MGMT_PORT" ]] ||
    die "TOOLBOX_AMQPS_PORT ($AMQPS_PORT) must differ from the AMQP ($AMQP_PORT) and management ($MGMT_PORT) ports"
TLS_CLIENT_CERT=${TOOLBOX_TLS_CLIENT_CERT:-optional}
[[ $TLS_CLIENT_CERT == optional || $TLS_CLIENT_CERT == required ]] ||
    die "TOOLBOX_TLS_CLIENT_CERT must be 'optional' or 'required', not '$TLS_CLIENT_CERT'"
TLS_DIR=$SERVICES_DIR/tls

RMQ_DIR=$SERVICES_DIR/rabbitmq
RMQ_HOME=$RMQ_DIR/home
RMQ_MNESIA=$RMQ_DIR/mnesia
RMQ_LOGDIR=$RMQ_DIR/log
RMQ_LOG=$RMQ_LOGDIR/rabbit.log
RMQ_CONF=$RMQ_DIR/rabbitmq.conf
RMQ_PLUGINS=$RMQ_DIR/enabled_plugins
RMQ_PIDFILE=$RMQ_DIR/rabbitmq.pid     # the Erlang VM's pid, written by RabbitMQ itself
RMQ_LAUNCHER=$RMQ_DIR/launcher.pid    # the pid of the rabbitmq-server script we started

PG_DIR=$SERVICES_DIR/postgres
PG_DATA=$PG_DIR/data
PG_SOCKDIR=$PG_DIR/run
PG_LOG=$PG_DIR/postgres.log

# ---------------------------------------------------------------------------------------------- helpers

need_root() {
    [[ $(id -u) == 0 ]] || die "'$1' must run as root (it manages the postgres system user's files and processes)"
}

# Serialise start/stop/reset-db between concurrent callers (tests run in parallel) with a lock on fd 9.
# Every process we spawn gets fd 9 closed (9>&-), so a long-running server never holds the lock.
take_lock() {
    mkdir -p "$SERVICES_DIR"
    exec 9>"$SERVICES_DIR/.lock"
    flock -w 300 9 || die "another $PROG is busy on $SERVICES_DIR for 5 minutes; giving up"
}

# Alive and not a zombie waiting to be reaped.
pid_alive() {
    [[ -n ${1:-} ]] && kill -0 "$1" 2>/dev/null || return 1
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [[ ${stat:0:1} != Z ]]
}

read_pid() { if [[ -s $1 ]]; then tr -dc '0-9' <"$1"; fi; }

# Is anything listening on 127.0.0.1 (or all addresses) at this TCP port?
port_listening() { [[ -n $(ss -Hltn "sport = :$1" 2>/dev/null) ]]; }

port_owner() { ss -Hltnp "sport = :$1" 2>/dev/null | sed -n 's/.*users:((\(.*\)))/\1/p' | head -n 1; }

log_tail() {
    local f=$1 n=${2:-40}
    if [[ -s $f ]]; then
        printf -- '----- last %d lines of %s -----\n' "$n" "$f" >&2
        tail -n "$n" "$f" >&2
        printf -- '----- end of %s -----\n' "$f" >&2
    fi
}

# Percent-encode for use inside a URL's userinfo or path.
urlenc() {
    local LC_ALL=C s=$1 out='' c i
    for ((i = 0; i < ${#s}; i++)); do
        c=${s:i:1}
        case $c in
        [a-zA-Z0-9._~-]) out+=$c ;;
        *) out+=$(printf '%%%02X' "'$c") ;;
        esac
    done
    printf '%s' "$out"
}

# Quote a value for psql's \set (single quotes doubled, backslashes doubled).
psql_lit() {
    local s=$1
    s=${s//\\/\\\\}
    s=${s//\'/\'\'}
    printf "'%s'" "$s"
}

# ------------------------------------------------------------------------------------------------ TLS

# Is TLS on for this folder? TOOLBOX_TLS=1/0 decides; unset, it is on once `tls` has made certificates.
tls_on() {
    case ${TOOLBOX_TLS:-} in
    1 | yes | true | on) return 0 ;;
    0 | no | false | off) return 1 ;;
    '') [[ -s $TLS_DIR/server.crt ]] ;;
    *) die "TOOLBOX_TLS must be 1 or 0, not '$TOOLBOX_TLS'" ;;
    esac
}

# Good: the certificate and its key exist and match, it is valid for one more day at least, and (given a CA)
# it chains to that CA.
tls_cert_ok() { # cert key [ca]
    [[ -s $1 && -s $2 ]] || return 1
    openssl x509 -in "$1" -noout -checkend 86400 >/dev/null 2>&1 || return 1
    [[ $(openssl x509 -in "$1" -noout -pubkey 2>/dev/null) == "$(openssl pkey -in "$2" -pubout 2>/dev/null)" ]] ||
        return 1
    [[ -z ${3:-} ]] || openssl verify -CAfile "$3" "$1" >/dev/null 2>&1
}

TLS_CHANGED=0

# Issue NAME.crt/NAME.key from our CA unless a good pair is there already. ext: openssl x509 extensions.
tls_leaf() { # name subject extensions
    local n=$1 d=$TLS_DIR
    tls_cert_ok "$d/$n.crt" "$d/$n.key" "$d/ca.crt" && return 0
    say "tls: issuing the $n certificate ($2)"
    printf '%s\n' "$3" >"$d/$n.ext"
    if ! (
        umask 077
        openssl req -new -newkey rsa:2048 -nodes -subj "$2" -keyout "$d/$n.key.tmp" -out "$d/$n.csr" &&
            openssl x509 -req -in "$d/$n.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -sha256 -days 825 \
                -set_serial "0x1$(openssl rand -hex 15)" -extfile "$d/$n.ext" -out "$d/$n.crt.tmp"
    ) >"$d/openssl.log" 2>&1; then
        log_tail "$d/openssl.log" 20
        die "tls: openssl failed making the $n certificate"
    fi
    chmod 600 "$d/$n.key.tmp"
    chmod 644 "$d/$n.crt.tmp"
    mv -f "$d/$n.key.tmp" "$d/$n.key"
    mv -f "$d/$n.crt.tmp" "$d/$n.crt"
    rm -f "$d/$n.csr" "$d/$n.ext"
    TLS_CHANGED=1
}

# A test CA, a server certificate for localhost/127.0.0.1 and a client certificate, each made only when
# missing, expiring, not matching its key or (leaves) not issued by the current CA. Keys are 0600.
tls_make_certs() {
    command -v openssl >/dev/null 2>&1 || die "tls: the openssl command is missing (apt-get install openssl)"
    [[ $TLS_DIR =~ ^[A-Za-z0-9_./+-]+$ ]] ||
        die "tls: $TLS_DIR holds characters the broker's configuration cannot take; use a plainer TOOLBOX_SERVICES_DIR"
    mkdir -p "$TLS_DIR"
    chmod 755 "$TLS_DIR"
    local d=$TLS_DIR
    if ! tls_cert_ok "$d/ca.crt" "$d/ca.key"; then
        say "tls: making a test certificate authority in $d"
        if ! (
            umask 077
            openssl req -x509 -new -newkey rsa:2048 -nodes -sha256 -days 3650 \
                -subj "/O=toolbox/CN=toolbox test CA" -keyout "$d/ca.key.tmp" -out "$d/ca.crt.tmp" \
                -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
        ) >"$d/openssl.log" 2>&1; then
            log_tail "$d/openssl.log" 20
            die "tls: openssl failed making the CA"
        fi
        chmod 600 "$d/ca.key.tmp"
        chmod 644 "$d/ca.crt.tmp"
        mv -f "$d/ca.key.tmp" "$d/ca.key"
        mv -f "$d/ca.crt.tmp" "$d/ca.crt"
        TLS_CHANGED=1
    fi
    # DNS:127.0.0.1 as well as IP:127.0.0.1: some clients (rabbitmq-c's own hostname check) read DNS names only.
    tls_leaf server "/O=toolbox/CN=localhost" "basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1, DNS:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid"
    tls_leaf client "/O=toolbox/CN=toolbox-client" "basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid"
    rm -f "$d/openssl.log"
}

# ------------------------------------------------------------------------------------------- packages

ensure_packages() {
    local pkgs=()
    [[ -x $RABBIT_BINDIR/rabbitmq-server ]] || pkgs+=(rabbitmq-server)
    [[ -x $PG_BINDIR/pg_ctl && -x $PG_BINDIR/initdb ]] || pkgs+=(postgresql postgresql-15)
    command -v psql >/dev/null 2>&1 || pkgs+=(postgresql-client)
    command -v epmd >/dev/null 2>&1 || pkgs+=(erlang-base)
    command -v runuser >/dev/null 2>&1 && command -v setsid >/dev/null 2>&1 &&
        command -v flock >/dev/null 2>&1 || pkgs+=(util-linux)
    command -v ss >/dev/null 2>&1 || pkgs+=(iproute2)
    ((${#pkgs[@]} == 0)) && return 0
    [[ $(id -u) == 0 ]] || die "missing packages (${pkgs[*]}) and not root: install them first"
    command -v apt-get >/dev/null 2>&1 || die "missing packages (${pkgs[*]}) and no apt-get to install them"
    say "installing missing packages: ${pkgs[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y "${pkgs[@]}"
    [[ -x $RABBIT_BINDIR/rabbitmq-server ]] || die "$RABBIT_BINDIR/rabbitmq-server still missing after install"
    [[ -x $PG_BINDIR/pg_ctl ]] ||
        die "$PG_BINDIR/pg_ctl still missing after install (is PostgreSQL 15 available? set TOOLBOX_PG_BINDIR)"
}

# ------------------------------------------------------------------------------------------- RabbitMQ

# The environment of our node (for `env`): every path points into the services folder.
rmq_env() {
    RMQ_ENV=(
        HOME="$RMQ_HOME"
        RABBITMQ_CONF_ENV_FILE="$RMQ_DIR/rabbitmq-env.conf"
        RABBITMQ_NODENAME="$RABBIT_NODE"
        RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
        RABBITMQ_NODE_PORT="$AMQP_PORT"
        RABBITMQ_DIST_PORT="$DIST_PORT"
        RABBITMQ_CTL_DIST_PORT_MIN="$CTL_DIST_MIN"
        RABBITMQ_CTL_DIST_PORT_MAX="$CTL_DIST_MAX"
        ERL_EPMD_PORT="$EPMD_PORT"
        ERL_EPMD_ADDRESS=127.0.0.1
        RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
        RABBITMQ_CTL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
        RABBITMQ_MNESIA_BASE="$RMQ_MNESIA"
        RABBITMQ_LOG_BASE="$RMQ_LOGDIR"
        RABBITMQ_LOGS="$RMQ_LOG"
        RABBITMQ_CONFIG_FILE="$RMQ_CONF"
        RABBITMQ_ADVANCED_CONFIG_FILE="$RMQ_DIR/advanced.config"
        RABBITMQ_ENABLED_PLUGINS_FILE="$RMQ_PLUGINS"
        RABBITMQ_PID_FILE="$RMQ_PIDFILE"
        ERL_CRASH_DUMP="$RMQ_LOGDIR/erl_crash.dump"
    )
}
RMQ_ENV=()
rmq_env

# rabbitmqctl on our node; never lets a wedged node hang the script.
rmqctl() { timeout --kill-after=5 120 env "${RMQ_ENV[@]}" "$RABBIT_BINDIR/rabbitmqctl" -n "$RABBIT_NODE" "$@"; }

# Is pid alive and one of ours? Our processes carry our node's HOME on their command line (the VM) or
# in their environment (the rabbitmq-server wrapper).
rmq_ours() {
    pid_alive "$1" || return 1
    tr '\0' '\n' 2>/dev/null <"/proc/$1/cmdline" | grep -qxF -- "$RMQ_HOME" && return 0
    tr '\0' '\n' 2>/dev/null <"/proc/$1/environ" | grep -qxF -- "HOME=$RMQ_HOME"
}

# The VM's pid if our node is running (else the wrapper's, while the VM is not up yet), else nothing.
rabbit_pid() {
    local pid
    pid=$(read_pid "$RMQ_PIDFILE")
    if rmq_ours "$pid"; then
        printf '%s' "$pid"
        return 0
    fi
    pid=$(read_pid "$RMQ_LAUNCHER")
    if rmq_ours "$pid"; then
        printf '%s' "$pid"
    fi
}

rabbit_write_config() {
    mkdir -p "$RMQ_HOME" "$RMQ_MNESIA" "$RMQ_LOGDIR"
    chmod 700 "$RMQ_HOME"
    cat >"$RMQ_CONF" <<EOF
# Written by scripts/services.sh on every start; edit the script, not this file.
listeners.tcp.default = 127.0.0.1:$AMQP_PORT
# guest/guest stays loopback-only (the default), which is all we need on 127.0.0.1.
log.file = $RMQ_LOG
log.file.level = info
log.console = false
EOF
    if tls_on; then
        cat >>"$RMQ_CONF" <<EOF
# TLS (scripts/services.sh tls): client certificates are verified when presented$(
            [[ $TLS_CLIENT_CERT == required ]] && printf ' and required')
listeners.ssl.default = 127.0.0.1:$AMQPS_PORT
ssl_options.cacertfile = $TLS_DIR/ca.crt
ssl_options.certfile = $TLS_DIR/server.crt
ssl_options.keyfile = $TLS_DIR/server.key
ssl_options.verify = verify_peer
ssl_options.fail_if_no_peer_cert = $([[ $TLS_CLIENT_CERT == required ]] && echo true || echo false)
ssl_options.versions.1 = tlsv1.3
ssl_options.versions.2 = tlsv1.2
EOF
    fi
    printf '[rabbitmq_management].\n' >"$RMQ_PLUGINS"
    cat >>"$RMQ_CONF" <<EOF
management.tcp.ip = 127.0.0.1
management.tcp.port = $MGMT_PORT
EOF
    # Keep /etc/rabbitmq/rabbitmq-env.conf out of our node's environment.
    printf '# Intentionally empty: scripts/services.sh sets the environment.\n' >"$RMQ_DIR/rabbitmq-env.conf"
}

rabbit_check_ports() {
    local p
    local ports=("$AMQP_PORT" "$DIST_PORT" "$CTL_DIST_MIN" "$MGMT_PORT")
    tls_on && ports+=("$AMQPS_PORT")
    for p in "${ports[@]}"; do
        if port_listening "$p"; then
            die "rabbitmq: port $p is already in use by $(port_owner "$p" || echo 'another process')" \
                "- not our node (no live pid in $RMQ_PIDFILE); stop it or pick other ports (TOOLBOX_AMQP_PORT)"
        fi
    done
}

rabbit_start() {
    local pid
    pid=$(rabbit_pid)
    if [[ -n $pid ]] && port_listening "$AMQP_PORT"; then
        say "rabbitmq: already running (pid $pid, node $RABBIT_NODE, amqp 127.0.0.1:$AMQP_PORT)"
        if tls_on; then
            rabbit_write_config # for the next start
            rabbit_tls_apply
        fi
        return 0
    fi
    local deadline=$((SECONDS + RABBIT_TIMEOUT))
    if [[ -n $pid ]]; then
        say "rabbitmq: found our node (pid $pid) not yet accepting connections; waiting for it"
    else
        rabbit_check_ports
        rabbit_write_config
        rm -f "$RMQ_PIDFILE" "$RMQ_LAUNCHER"
        say "rabbitmq: starting node $RABBIT_NODE on 127.0.0.1:$AMQP_PORT (dist $DIST_PORT, epmd $EPMD_PORT)"
        # In a session of its own, so a terminal's hangup or Ctrl-C never reaches it. The script is not a
        # process-group leader here, so setsid execs in place and $! is the rabbitmq-server wrapper's pid.
        (
            cd "$RMQ_DIR"
            setsid env "${RMQ_ENV[@]}" "$RABBIT_BINDIR/rabbitmq-server" \
                </dev/null >"$RMQ_LOGDIR/startup.log" 2>&1 9>&- &
            echo $! >"$RMQ_LAUNCHER"
        ) || die "rabbitmq: could not launch $RABBIT_BINDIR/rabbitmq-server"
    fi
    # Wait until the node answers at all, then for the rabbit application to finish booting.
    until rmqctl -q ping >/dev/null 2>&1; do
        [[ -n $(rabbit_pid) ]] || rabbit_fail "the server exited during startup"
        ((SECONDS < deadline)) || rabbit_fail "the node did not answer within ${RABBIT_TIMEOUT}s"
        sleep 1
    done
    local left=$((deadline - SECONDS))
    ((left > 0)) || left=1
    if ! rmqctl -q await_startup --timeout "$left" >/dev/null 2>&1; then
        ((SECONDS < deadline)) || rabbit_fail "the broker did not finish booting within ${RABBIT_TIMEOUT}s"
        rabbit_fail "the broker failed to boot"
    fi
    until port_listening "$AMQP_PORT"; do
        ((SECONDS < deadline)) || rabbit_fail "the broker is up but not listening on $AMQP_PORT"
        sleep 1
    done
    if tls_on; then
        # The node starts its TLS listeners right after the plain ones; one found running (started without
        # TLS) gets the listener added at run time.
        local i
        for ((i = 0; i < 10; i++)); do
            port_listening "$AMQPS_PORT" && break
            sleep 0.5
        done
        port_listening "$AMQPS_PORT" || rabbit_tls_apply
    fi
    say "rabbitmq: running (pid $(rabbit_pid), log $RMQ_LOG$(tls_on && printf ', amqps 127.0.0.1:%s' "$AMQPS_PORT"))"
}

RABBIT_TLS_RESTARTED=0

# The TLS options of rabbit_write_config as an Erlang term.
rabbit_tls_erl_opts() {
    printf '[{cacertfile,"%s"},{certfile,"%s"},{keyfile,"%s"},{verify,verify_peer},{fail_if_no_peer_cert,%s},' \
        "$TLS_DIR/ca.crt" "$TLS_DIR/server.crt" "$TLS_DIR/server.key" \
        "$([[ $TLS_CLIENT_CERT == required ]] && echo true || echo false)"
    printf "{versions,['tlsv1.3','tlsv1.2']}]"
}

# Make a running node listen for TLS without a restart: set the options the configuration file would have
# set and start the listener the way the node does at boot. When the listener is up already, only make it
# read changed certificates (clear the PEM cache). A restart is the last resort.
rabbit_tls_apply() {
    if port_listening "$AMQPS_PORT"; then
        if ((TLS_CHANGED)); then
            say "rabbitmq: certificates changed; clearing the node's PEM cache"
            rmqctl -q eval 'ssl:clear_pem_cache().' >/dev/null 2>&1 || warn "rabbitmq: clearing the PEM cache failed"
        fi
        return 0
    fi
    local listener="{\"127.0.0.1\",$AMQPS_PORT}" out
    say "rabbitmq: starting a TLS listener on 127.0.0.1:$AMQPS_PORT in the running node (no restart)"
    out=$(rmqctl -q eval "ok = application:set_env(rabbit, ssl_options, $(rabbit_tls_erl_opts)),
        ok = application:set_env(rabbit, ssl_listeners, [$listener]),
        ok = rabbit_networking:start_ssl_listener($listener, rabbit_networking:ensure_ssl(), 10)." 2>&1) || true
    local deadline=$((SECONDS + 15))
    until port_listening "$AMQPS_PORT"; do
        if ((SECONDS >= deadline)); then
            ((!RABBIT_TLS_RESTARTED)) ||
                rabbit_fail "the broker is up but not listening for TLS on $AMQPS_PORT (${out//$'\n'/ })"
            warn "rabbitmq: the node did not start the TLS listener (${out//$'\n'/ }); restarting it"
            RABBIT_TLS_RESTARTED=1
            rabbit_stop
            rabbit_write_config
            rabbit_start
            return 0
        fi
        sleep 0.5
    done
}

# Report a failed start with the logs, then stop whatever is left of the node so the next start
# begins clean (the logs stay).
rabbit_fail() {
    printf '%s: error: rabbitmq: %s\n' "$PROG" "$1" >&2
    printf '%s: the log is %s (startup output in %s)\n' "$PROG" "$RMQ_LOG" "$RMQ_LOGDIR/startup.log" >&2
    log_tail "$RMQ_LOGDIR/startup.log" 20
    log_tail "$RMQ_LOG" 40
    if [[ -n $(rabbit_pid) ]]; then
        printf '%s: stopping what is left of the node\n' "$PROG" >&2
        rabbit_stop >/dev/null 2>&1 || true
    fi
    epmd_stop
    exit 1
}

epmd_stop() {
    # Our node uses a private epmd on its own port; stop it only if no node is registered with it
    # (`epmd -kill` refuses otherwise).
    port_listening "$EPMD_PORT" || return 0
    local names
    names=$(ERL_EPMD_PORT=$EPMD_PORT epmd -names 2>/dev/null | grep -c '^name ' || true)
    if [[ $names == 0 ]]; then
        ERL_EPMD_PORT=$EPMD_PORT epmd -kill >/dev/null 2>&1 || true
    else
        warn "epmd on port $EPMD_PORT still has $names node(s) registered; left running"
    fi
}

rabbit_stop() {
    local pid launcher
    pid=$(rabbit_pid)
    launcher=$(read_pid "$RMQ_LAUNCHER")
    if [[ -z $pid ]]; then
        say "rabbitmq: not running"
        rm -f "$RMQ_LAUNCHER"
        epmd_stop
        return 0
    fi
    say "rabbitmq: stopping node $RABBIT_NODE (pid $pid)"
    if ! rmqctl -q stop >/dev/null 2>&1; then
        warn "rabbitmqctl stop failed; sending SIGTERM to the pid we recorded ($pid)"
        kill -TERM "$pid" 2>/dev/null || true
    fi
    local deadline=$((SECONDS + 60))
    while rmq_ours "$pid" || rmq_ours "$launcher"; do
        ((SECONDS < deadline)) || die "rabbitmq: pid $pid did not exit within 60s"
        sleep 0.5
    done
    rm -f "$RMQ_LAUNCHER" "$RMQ_PIDFILE"
    epmd_stop
    say "rabbitmq: stopped"
}

rabbit_status() {
    local pid state=stopped
    pid=$(rabbit_pid)
    if [[ -n $pid ]]; then
        if port_listening "$AMQP_PORT"; then state=running; else state=starting; fi
    fi
    printf '%-9s %-8s port %-5s pid %-8s data %s  (node %s, log %s)\n' \
        rabbitmq "$state" "$AMQP_PORT" "${pid:--}" "$RMQ_MNESIA" "$RABBIT_NODE" "$RMQ_LOG"
    if tls_on; then
        local tstate=stopped
        if [[ $state == running ]]; then
            if port_listening "$AMQPS_PORT"; then tstate=running; else tstate=missing; fi
        fi
        printf '%-9s %-8s port %-5s certificates %s  (client certificates %s)\n' \
            amqps "$tstate" "$AMQPS_PORT" "$TLS_DIR" "$TLS_CLIENT_CERT"
        [[ $state != running || $tstate == running ]] || return 1
    fi
    [[ $state == running ]]
}

# ------------------------------------------------------------------------------------------ PostgreSQL

# Run a command as the postgres system user, from a directory it can read, without our lock fd.
as_pg() { (cd "$PG_DIR" && runuser -u "$PG_SYSUSER" -- "$@" 9>&-); }

# PostgreSQL needs search permission on every directory above its data folder.
pg_check_traversable() {
    runuser -u "$PG_SYSUSER" -- test -x "$SERVICES_DIR" 2>/dev/null && return 0
    local d=$SERVICES_DIR bad=()
    while [[ -n $d && $d != / ]]; do
        runuser -u "$PG_SYSUSER" -- test -x "$d" 2>/dev/null || bad=("$d" "${bad[@]}")
        d=$(dirname "$d")
    done
    die "postgres: the '$PG_SYSUSER' user cannot reach $SERVICES_DIR: no search (x) permission on" \
        "${bad[0]:-$SERVICES_DIR} (ls -ld it). Either 'chmod o+x' the directories on that path or set" \
        "TOOLBOX_SERVICES_DIR to a folder outside it (e.g. /var/tmp/toolbox-services)."
}

pg_pid() {
    local pid
    [[ -s $PG_DATA/postmaster.pid ]] || return 0
    pid=$(head -n 1 "$PG_DATA/postmaster.pid" | tr -dc '0-9')
    if pid_alive "$pid" && as_pg "$PG_BINDIR/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1; then
        printf '%s' "$pid"
    fi
}

pg_write_config() {
    cat >"$PG_DATA/toolbox.conf" <<EOF
# Written by scripts/services.sh on every start; edit the script, not this file.
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$PG_SOCKDIR'
password_encryption = 'scram-sha-256'
EOF
    local hostssl=''
    if tls_on; then
        # The server's own copies, owned by the postgres user (it refuses a key others can read).
        local f
        for f in ca.crt server.crt server.key; do
            install -o "$PG_SYSUSER" -g "$(id -gn "$PG_SYSUSER")" -m 600 "$TLS_DIR/$f" "$PG_DATA/toolbox-$f"
        done
        cat >>"$PG_DATA/toolbox.conf" <<EOF
# TLS (scripts/services.sh tls); plain connections keep working.
ssl = on
ssl_cert_file = 'toolbox-server.crt'
ssl_key_file = 'toolbox-server.key'
ssl_ca_file = 'toolbox-ca.crt'
ssl_min_protocol_version = 'TLSv1.2'
EOF
        hostssl="hostssl all       all       127.0.0.1/32   scram-sha-256"
        [[ $TLS_CLIENT_CERT == required ]] && hostssl+=" clientcert=verify-ca"
    fi
    cat >"$PG_DATA/pg_hba.conf" <<EOF
# Written by scripts/services.sh on every start; edit the script, not this file.
# TYPE  DATABASE  USER      ADDRESS        METHOD
local   all       postgres                 trust
local   all       all                      scram-sha-256
${hostssl:+$hostssl
}host    all       all       127.0.0.1/32   scram-sha-256
EOF
    chown "$PG_SYSUSER:" "$PG_DATA/toolbox.conf" "$PG_DATA/pg_hba.conf"
    chmod 600 "$PG_DATA/toolbox.conf" "$PG_DATA/pg_hba.conf"
    grep -q "^include_if_exists = 'toolbox.conf'" "$PG_DATA/postgresql.conf" ||
        printf "\n# Added by scripts/services.sh\ninclude_if_exists = 'toolbox.conf'\n" >>"$PG_DATA/postgresql.conf"
}

pg_init() {
    mkdir -p "$PG_DIR"
    chown "$PG_SYSUSER:" "$PG_DIR"
    chmod 700 "$PG_DIR"
    pg_check_traversable
    as_pg mkdir -p "$PG_SOCKDIR"
    if [[ ! -s $PG_DATA/PG_VERSION ]]; then
        [[ -d $PG_DATA && -n $(ls -A "$PG_DATA" 2>/dev/null) ]] &&
            die "postgres: $PG_DATA exists but holds no cluster; move it away or remove it"
        say "postgres: initialising a cluster in $PG_DATA"
        as_pg "$PG_BINDIR/initdb" -D "$PG_DATA" -U postgres --encoding=UTF8 --locale=C.UTF-8 \
            --auth-local=trust --auth-host=scram-sha-256 >"$PG_DIR/initdb.log" 2>&1 || {
            log_tail "$PG_DIR/initdb.log" 30
            die "postgres: initdb failed (full output in $PG_DIR/initdb.log)"
        }
    fi
    local v
    v=$(cat "$PG_DATA/PG_VERSION")
    [[ $v == 15 ]] || warn "postgres: the cluster in $PG_DATA is version $v, not 15"
}

pg_check_port() {
    if port_listening "$PG_PORT"; then
        die "postgres: port $PG_PORT is already in use by $(port_owner "$PG_PORT" || echo 'another process')" \
            "- not our cluster (not running in $PG_DATA); stop it or pick another port (TOOLBOX_PG_PORT)"
    fi
}

pg_start() {
    local pid
    pid=$(pg_pid)
    if [[ -n $pid ]]; then
        say "postgres: already running (pid $pid, 127.0.0.1:$PG_PORT)"
        pg_bootstrap
        if tls_on && ! pg_tls_works; then
            pg_tls_apply
        fi
        return 0
    fi
    local sock=$PG_SOCKDIR/.s.PGSQL.$PG_PORT
    ((${#sock} < 108)) || die "postgres: socket path $sock is longer than 107 bytes; use a shorter TOOLBOX_SERVICES_DIR"
    pg_check_port
    pg_init
    pg_write_config
    say "postgres: starting on 127.0.0.1:$PG_PORT (data $PG_DATA)"
    if ! as_pg "$PG_BINDIR/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -w -t "$PG_TIMEOUT" start >/dev/null 2>&1; then
        printf '%s: error: postgres: failed to start or not ready within %ss; the log is %s\n' \
            "$PROG" "$PG_TIMEOUT" "$PG_LOG" >&2
        log_tail "$PG_LOG" 40
        if [[ -n $(pg_pid) ]]; then
            printf '%s: stopping what is left of the server\n' "$PROG" >&2
            as_pg "$PG_BINDIR/pg_ctl" -D "$PG_DATA" -m fast -w -t 30 stop >/dev/null 2>&1 || true
        fi
        exit 1
    fi
    say "postgres: running (pid $(pg_pid), log $PG_LOG)"
    pg_bootstrap
    if tls_on && ! pg_tls_works; then
        pg_fail_tls
    fi
}

# Does a verify-full TLS connection to the server work (as the owner role, with the client certificate)?
pg_tls_works() {
    local conn="host=127.0.0.1 port=$PG_PORT dbname=$PG_DB user=$PG_OWNER connect_timeout=10 sslmode=verify-full"
    conn+=" sslrootcert=$TLS_DIR/ca.crt sslcert=$TLS_DIR/client.crt sslkey=$TLS_DIR/client.key"
    [[ $(PGPASSWORD=$PG_OWNER_PASSWORD psql -X -A -t -q -c 'SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()' \
        "$conn" 2>"$PG_DIR/tls-check.log" 9>&-) == t ]]
}

pg_fail_tls() {
    printf '%s: error: postgres: TLS connections to 127.0.0.1:%s do not work\n' "$PROG" "$PG_PORT" >&2
    log_tail "$PG_DIR/tls-check.log" 5
    log_tail "$PG_LOG" 20
    exit 1
}

# TLS settings take effect with a reload: no connection is dropped. New certificates too.
pg_tls_apply() {
    pg_write_config
    say "postgres: applying the TLS settings (reload, no restart)"
    as_pg "$PG_BINDIR/pg_ctl" -D "$PG_DATA" reload >/dev/null || die "postgres: pg_ctl reload failed; see $PG_LOG"
    local i
    for ((i = 0; i < 20; i++)); do
        pg_tls_works && return 0
        sleep 0.5
    done
    pg_fail_tls
}

# psql as the superuser over our unix socket.
pg_super() {
    as_pg psql -X -q -v ON_ERROR_STOP=1 -h "$PG_SOCKDIR" -p "$PG_PORT" -U postgres -d postgres "$@"
}

# Roles, database and grants; every statement is safe to repeat.
pg_bootstrap() {
    {
        printf '\\set db %s\n' "$(psql_lit "$PG_DB")"
        printf '\\set owner %s\n' "$(psql_lit "$PG_OWNER")"
        printf '\\set owner_pw %s\n' "$(psql_lit "$PG_OWNER_PASSWORD")"
        printf '\\set worker %s\n' "$(psql_lit "$PG_WORKER")"
        printf '\\set worker_pw %s\n' "$(psql_lit "$PG_WORKER_PASSWORD")"
        printf '\\set monitor %s\n' "$(psql_lit "$PG_MONITOR")"
        printf '\\set monitor_pw %s\n' "$(psql_lit "$PG_MONITOR_PASSWORD")"
        cat <<'EOF'
SELECT format('CREATE ROLE %I', :'owner')
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'owner') \gexec
SELECT format('ALTER ROLE %I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD %L', :'owner', :'owner_pw') \gexec
SELECT format('CREATE ROLE %I', :'worker')
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'worker') \gexec
SELECT format('ALTER ROLE %I LOGIN NOINHERIT NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD %L',
              :'worker', :'worker_pw') \gexec
SELECT format('CREATE ROLE %I', :'monitor')
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'monitor') \gexec
SELECT format('ALTER ROLE %I LOGIN NOINHERIT NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD %L',
              :'monitor', :'monitor_pw') \gexec
SELECT format('CREATE DATABASE %I OWNER %I ENCODING %L TEMPLATE template0', :'db', :'owner', 'UTF8')
 WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'db') \gexec
SELECT format('ALTER DATABASE %I OWNER TO %I', :'db', :'owner') \gexec
SELECT format('REVOKE ALL ON DATABASE %I FROM PUBLIC', :'db') \gexec
SELECT format('GRANT CONNECT ON DATABASE %I TO %I, %I, %I', :'db', :'worker', :'monitor', :'owner') \gexec
-- Our roles reach their own database only (the superuser is unaffected).
SELECT format('REVOKE CONNECT ON DATABASE %I FROM PUBLIC', datname)
  FROM pg_database WHERE datname IN ('postgres', 'template1') AND datname <> :'db' \gexec
\connect :"db"
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
SELECT format('GRANT USAGE ON SCHEMA public TO %I, %I', :'worker', :'monitor') \gexec
EOF
    } | pg_super -f - >/dev/null || die "postgres: creating roles and database '$PG_DB' failed"
}

pg_stop() {
    local pid
    pid=$(pg_pid)
    if [[ -z $pid ]]; then
        say "postgres: not running"
        return 0
    fi
    say "postgres: stopping (pid $pid)"
    as_pg "$PG_BINDIR/pg_ctl" -D "$PG_DATA" -m fast -w -t 60 stop >/dev/null ||
        die "postgres: pg_ctl stop failed; see $PG_LOG"
    say "postgres: stopped"
}

pg_status() {
    local pid state=stopped
    pid=$(pg_pid)
    if [[ -n $pid ]]; then
        if as_pg "$PG_BINDIR/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" -t 5; then state=running; else state=starting; fi
    fi
    printf '%-9s %-8s port %-5s pid %-8s data %s  (db %s, log %s)\n' \
        postgres "$state" "$PG_PORT" "${pid:--}" "$PG_DATA" "$PG_DB" "$PG_LOG"
    [[ $state == running ]]
}

pg_reset_db() {
    [[ -n $(pg_pid) ]] || die "postgres is not running; run '$PROG start' first"
    say "postgres: dropping and recreating database '$PG_DB'"
    printf '\\set db %s\nSELECT format(%s, :%s) \\gexec\n' "$(psql_lit "$PG_DB")" \
        "'DROP DATABASE IF EXISTS %I WITH (FORCE)'" "'db'" | pg_super -f - >/dev/null ||
        die "postgres: dropping database '$PG_DB' failed"
    pg_bootstrap
    say "postgres: database '$PG_DB' recreated (empty; run 'toolbox setup' to create the tables)"
}

# -------------------------------------------------------------------------------------------- commands

cmd_start() {
    need_root start
    ensure_packages
    take_lock
    if tls_on; then tls_make_certs; fi
    # Check everything that can be checked before starting anything.
    [[ -n $(rabbit_pid) ]] || rabbit_check_ports
    pg_check_traversable
    [[ -n $(pg_pid) ]] || pg_check_port
    rabbit_start
    pg_start
}

cmd_stop() {
    need_root stop
    take_lock
    local rc=0
    rabbit_stop || rc=1
    pg_stop || rc=1
    return "$rc"
}

cmd_status() {
    need_root status
    local rc=0
    rabbit_status || rc=1
    pg_status || rc=1
    return "$rc"
}

# Percent-encode a URL query value; '/' may stay as is there.
urlenc_query() { local v; v=$(urlenc "$1"); printf '%s' "${v//%2F//}"; }

# After the plain export lines: the same place over TLS (amqps://, sslmode=verify-full, our CA and client
# certificate). vhost is the URL path ("/" for the default vhost), db the database.
print_tls_env() { # vhost db
    if ! tls_on || [[ ! -s $TLS_DIR/ca.crt ]]; then die "TLS is not set up in $SERVICES_DIR; run '$PROG tls' first"; fi
    q() { printf "'%s'" "${1//\'/\'\\\'\'}"; }
    local d=$TLS_DIR ssl
    ssl="sslmode=verify-full&sslrootcert=$(urlenc_query "$d/ca.crt")&sslcert=$(urlenc_query "$d/client.crt")"
    ssl+="&sslkey=$(urlenc_query "$d/client.key")"
    printf 'export TOOLBOX_BROKER_URL=%s\n' "$(q "amqps://guest:guest@127.0.0.1:$AMQPS_PORT/$1")"
    printf 'export TOOLBOX_BROKER_SSL_CA_FILE=%s\n' "$(q "$d/ca.crt")"
    printf 'export TOOLBOX_BROKER_SSL_CERT_FILE=%s\n' "$(q "$d/client.crt")"
    printf 'export TOOLBOX_BROKER_SSL_KEY_FILE=%s\n' "$(q "$d/client.key")"
    printf 'export TOOLBOX_RESULT_BACKEND=%s\n' \
        "$(q "postgresql://$(urlenc "$PG_WORKER"):$(urlenc "$PG_WORKER_PASSWORD")@127.0.0.1:$PG_PORT/$(urlenc "$2")?$ssl")"
    printf 'export TOOLBOX_DATABASE_ADMIN_URL=%s\n' \
        "$(q "postgresql://$(urlenc "$PG_OWNER"):$(urlenc "$PG_OWNER_PASSWORD")@127.0.0.1:$PG_PORT/$(urlenc "$2")?$ssl")"
    printf 'export TOOLBOX_MONITOR_DATABASE_URL=%s\n' \
        "$(q "postgresql://$(urlenc "$PG_MONITOR"):$(urlenc "$PG_MONITOR_PASSWORD")@127.0.0.1:$PG_PORT/$(urlenc "$2")?$ssl")"
    printf 'export TOOLBOX_AMQPS_PORT=%s\n' "$AMQPS_PORT"
}

cmd_env() {
    local tls=0
    case ${1:-} in
    '') ;;
    --tls) tls=1 ;;
    *) die "env: unknown option '$1' (only --tls)" ;;
    esac
    q() { printf "'%s'" "${1//\'/\'\\\'\'}"; }
    printf 'export TOOLBOX_BROKER_URL=%s\n' "$(q "amqp://guest:guest@127.0.0.1:$AMQP_PORT//")"
    printf 'export TOOLBOX_RESULT_BACKEND=%s\n' \
        "$(q "postgresql://$(urlenc "$PG_WORKER"):$(urlenc "$PG_WORKER_PASSWORD")@127.0.0.1:$PG_PORT/$(urlenc "$PG_DB")")"
    printf 'export TOOLBOX_DATABASE_ADMIN_URL=%s\n' \
        "$(q "postgresql://$(urlenc "$PG_OWNER"):$(urlenc "$PG_OWNER_PASSWORD")@127.0.0.1:$PG_PORT/$(urlenc "$PG_DB")")"
    printf 'export TOOLBOX_MONITOR_DATABASE_URL=%s\n' \
        "$(q "postgresql://$(urlenc "$PG_MONITOR"):$(urlenc "$PG_MONITOR_PASSWORD")@127.0.0.1:$PG_PORT/$(urlenc "$PG_DB")")"
    printf 'export TOOLBOX_BROKER_MANAGEMENT_URL=%s\n' "$(q "http://guest:guest@127.0.0.1:$MGMT_PORT")"
    printf 'export TOOLBOX_SERVICES_DIR=%s\n' "$(q "$SERVICES_DIR")"
    printf 'export TOOLBOX_AMQP_PORT=%s\n' "$AMQP_PORT"
    printf 'export TOOLBOX_PG_PORT=%s\n' "$PG_PORT"
    if ((tls)); then print_tls_env / "$PG_DB"; fi
}

# An isolated world for one test suite: RabbitMQ vhost NAME (guest may use it) and database NAME
# (same roles and grants as the main one). Prints export lines like `env`, pointing into it.
cmd_sandbox() {
    local name=${1:-} tls=0
    case ${2:-} in
    '') ;;
    --tls) tls=1 ;;
    *) die "sandbox: unknown option '$2' (only --tls)" ;;
    esac
    [[ $name =~ ^[a-z][a-z0-9_]{0,40}$ ]] || die "sandbox: NAME must match [a-z][a-z0-9_]* (got '$name')"
    ((!tls)) || { tls_on && [[ -s $TLS_DIR/ca.crt ]]; } || die "TLS is not set up in $SERVICES_DIR; run '$PROG tls' first"
    need_root sandbox
    take_lock
    rmq_env
    if ! rmqctl list_vhosts --silent 2>/dev/null | grep -qx "$name"; then
        rmqctl add_vhost "$name" >/dev/null || die "sandbox: cannot add vhost $name"
    fi
    rmqctl set_permissions -p "$name" guest '.*' '.*' '.*' >/dev/null || die "sandbox: cannot grant vhost $name"
    PG_DB=$name pg_bootstrap
    q() { printf "'%s'" "${1//\'/\'\\\'\'}"; }
    printf 'export TOOLBOX_BROKER_URL=%s\n' "$(q "amqp://guest:guest@127.0.0.1:$AMQP_PORT/$name")"
    printf 'export TOOLBOX_RESULT_BACKEND=%s\n' \
        "$(q "postgresql://$(urlenc "$PG_WORKER"):$(urlenc "$PG_WORKER_PASSWORD")@127.0.0.1:$PG_PORT/$name")"
    printf 'export TOOLBOX_DATABASE_ADMIN_URL=%s\n' \
        "$(q "postgresql://$(urlenc "$PG_OWNER"):$(urlenc "$PG_OWNER_PASSWORD")@127.0.0.1:$PG_PORT/$name")"
    printf 'export TOOLBOX_MONITOR_DATABASE_URL=%s\n' \
        "$(q "postgresql://$(urlenc "$PG_MONITOR"):$(urlenc "$PG_MONITOR_PASSWORD")@127.0.0.1:$PG_PORT/$name")"
    printf 'export TOOLBOX_BROKER_MANAGEMENT_URL=%s\n' "$(q "http://guest:guest@127.0.0.1:$MGMT_PORT")"
    if ((tls)); then print_tls_env "$name" "$name"; fi
}

# Turn TLS on for this folder's services: certificates (made or renewed only when needed), then the
# listeners. Running services take it without a restart (PostgreSQL: reload; RabbitMQ: the listener is
# started inside the node); stopped ones get it at their next start.
cmd_tls() {
    need_root tls
    take_lock
    TOOLBOX_TLS=1
    tls_make_certs
    ((TLS_CHANGED)) || say "tls: certificates in $TLS_DIR are in place and valid"
    if [[ -n $(rabbit_pid) ]] && port_listening "$AMQP_PORT"; then
        rabbit_write_config # for the next start
        rabbit_tls_apply
        say "rabbitmq: amqps on 127.0.0.1:$AMQPS_PORT (client certificates $TLS_CLIENT_CERT)"
    else
        say "rabbitmq: not running; it will listen for TLS on 127.0.0.1:$AMQPS_PORT from its next start"
    fi
    if [[ -n $(pg_pid) ]]; then
        if ((TLS_CHANGED)) || ! pg_tls_works; then pg_tls_apply; fi
        say "postgres: TLS on 127.0.0.1:$PG_PORT (sslmode=verify-full with sslrootcert=$TLS_DIR/ca.crt)"
    else
        say "postgres: not running; TLS is on from its next start"
    fi
    say "tls: eval \"\$($PROG env --tls)\" points the toolbox at them"
}

cmd_psql() {
    PGPASSWORD=$PG_OWNER_PASSWORD exec psql -X \
        "host=127.0.0.1 port=$PG_PORT dbname=$PG_DB user=$PG_OWNER" "$@"
}

cmd_reset_db() {
    need_root reset-db
    take_lock
    pg_reset_db
}

usage() {
    cat <<EOF
Usage: $PROG COMMAND [ARGS]

Runs a RabbitMQ and a PostgreSQL of the project's own in $SERVICES_DIR.

Commands:
  start        install missing packages, start both services (already running ones are left alone)
  stop         stop what start started
  restart      stop, then start
  status       print each service's state, port, pid and data folder; exit 0 only if both are up
  env [--tls]  print export lines for eval: eval "\$($PROG env)"; --tls: amqps:// and sslmode=verify-full
  psql [ARGS]  open psql on database $PG_DB as its owner $PG_OWNER (extra ARGS go to psql)
  reset-db     drop and recreate database $PG_DB (roles and grants included, no tables)
  rabbitmqctl ARGS   run rabbitmqctl against our node (e.g. list_connections, close_connection)
  sandbox NAME [--tls]  create vhost NAME and database NAME (idempotent) and print export lines for them
  tls          make a test CA + server/client certificates in $TLS_DIR (when missing or expiring) and
               turn on TLS: RabbitMQ amqps on $AMQPS_PORT, PostgreSQL ssl on $PG_PORT (running services
               take it without a restart; plain listeners stay). start does it too when TOOLBOX_TLS=1

Ports: AMQP $AMQP_PORT (TOOLBOX_AMQP_PORT), AMQPS $AMQPS_PORT (TOOLBOX_AMQPS_PORT), PostgreSQL $PG_PORT (TOOLBOX_PG_PORT),
       Erlang distribution $DIST_PORT, rabbitmqctl $CTL_DIST_MIN-$CTL_DIST_MAX, epmd $EPMD_PORT.
See the header of $0 for every setting.
EOF
}

main() {
    local cmd=${1:-help}
    (($#)) && shift
    case $cmd in
    start) cmd_start ;;
    stop) cmd_stop ;;
    restart) cmd_stop && cmd_start ;;
    status) cmd_status ;;
    env) cmd_env "$@" ;;
    psql) cmd_psql "$@" ;;
    reset-db) cmd_reset_db ;;
    sandbox) cmd_sandbox "$@" ;;
    tls) cmd_tls ;;
    rabbitmqctl) need_root rabbitmqctl; rmqctl "$@" ;;
    rabbitmq-plugins) need_root rabbitmq-plugins
        timeout --kill-after=5 120 env "${RMQ_ENV[@]}" "$RABBIT_BINDIR/rabbitmq-plugins" -n "$RABBIT_NODE" "$@" ;;
    help | -h | --help) usage ;;
    *)
        usage >&2
        die "unknown command '$cmd'"
        ;;
    esac
}

main "$@"
