#!/usr/bin/env bash
# Quick start: a local 3-node HarmonyLite cluster on the embedded default (each node
# starts its own nats-server child; the three form a JetStream cluster). Installs
# what is missing, writes a row on node 1, shows it on nodes 2 and 3, then keeps
# running until Ctrl-C. Databases and logs live in ./.harmonylite/cluster.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-deps.sh
exec node dist/scripts/cluster.js "$@"
