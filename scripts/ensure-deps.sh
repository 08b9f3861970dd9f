#!/usr/bin/env bash
# Installs what a fresh machine lacks: nats-server and the tools the tests run as a user
# would (the sqlite3 shell, sqlite-utils, rclone, OpenSSH's sshd, setpriv; Debian
# packages), and the npm dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v nats-server >/dev/null 2>&1 || need+=(nats-server)
command -v sqlite3 >/dev/null 2>&1 || need+=(sqlite3)
command -v python3 >/dev/null 2>&1 || need+=(python3)
command -v sqlite-utils >/dev/null 2>&1 || need+=(sqlite-utils)
command -v rclone >/dev/null 2>&1 || need+=(rclone)
command -v setpriv >/dev/null 2>&1 || need+=(util-linux)
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing with apt-get: ${need[*]}"
  sudo=()
  [ "$(id -u)" = 0 ] || sudo=(sudo)
  "${sudo[@]}" apt-get update -qq
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
fi
[ -f dist/src/cli/main.js ] || npm run build
