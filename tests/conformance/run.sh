#!/usr/bin/env bash
# run.sh - run one conformance break-it scenario in its own sandbox, or the suite against the test services.
#   run.sh break BINARY SCENARIO SANDBOX      (SANDBOX: t_conf_<n>, created by scripts/services.sh sandbox)
#   run.sh services TOOLBOX CONFORMANCE       (toolbox setup + toolbox-conformance --config config/test.yaml)
# Exit 77 (skipped) when the RabbitMQ management API the suite reads the bindings from is not reachable.
set -euo pipefail
src=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)
mode=$1
shift
case $mode in
break)
    exports=$(bash "$src/scripts/services.sh" sandbox "$3") || {
        echo "cannot create sandbox $3: are the services running (scripts/services.sh start)?" >&2
        exit 1
    }
    eval "$exports"
    export TOOLBOX_CONFIG_DIR=$src/config
    exec "$1" "$2"
    ;;
services)
    cd "$src"
    "$1" --config config/test.yaml setup
    set +e
    "$2" --config config/test.yaml --verbose --check bindings_readable >/dev/null 2>&1
    rc=$?
    set -e
    if ((rc != 0)); then
        echo "SKIP: the RabbitMQ management API is not reachable; enable rabbitmq_management or set" \
            "TOOLBOX_BROKER_MANAGEMENT_URL"
        exit 77
    fi
    exec "$2" --config config/test.yaml
    ;;
*)
    echo "usage: run.sh break BINARY SCENARIO SANDBOX | run.sh services TOOLBOX CONFORMANCE" >&2
    exit 2
    ;;
esac
