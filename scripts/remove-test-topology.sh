#!/usr/bin/env bash
# Removes every RabbitMQ queue and exchange whose name starts with PREFIX. (the
# topology a test or check made under its own QUEUE_PREFIX), when a run was killed
# before it could clean up itself. Needs rabbitmqctl on this machine; quiet otherwise.
#
#   scripts/remove-test-topology.sh cc-test-0123abcd

set -uo pipefail
prefix=${1:?usage: remove-test-topology.sh PREFIX}
command -v rabbitmqctl >/dev/null 2>&1 || exit 0
# rabbitmqctl reads stdin: each call gets /dev/null, or it would swallow the list.
rabbitmqctl -q list_queues name </dev/null 2>/dev/null | grep -F "$prefix." | grep "^$prefix" |
    while read -r queue; do rabbitmqctl -q delete_queue "$queue" </dev/null >/dev/null 2>&1; done
# Exchanges have no rabbitmqctl command of their own.
rabbitmqctl -q list_exchanges name </dev/null 2>/dev/null | grep -F "$prefix." | grep "^$prefix" |
    while read -r exchange; do
        rabbitmqctl -q eval "rabbit_exchange:delete(rabbit_misc:r(<<\"/\">>, exchange, <<\"$exchange\">>), false, <<\"cleanup\">>)." \
            </dev/null >/dev/null 2>&1
    done
exit 0
