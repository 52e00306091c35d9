#!/usr/bin/env bash
# Makes sure what the test suite talks to is on this machine. Tests start
# their own private instances of these servers on free ports; nothing here
# needs to be running. NATS runs in-process from its Go module.
set -euo pipefail

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
# The RabbitMQ job store and bridge tests start a private broker from the
# Debian package's script (it runs as the calling user).
[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || need+=(rabbitmq-server)
command -v memcached >/dev/null 2>&1 || need+=(memcached)
# The Batch API test runs the official openai npm package.
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)
# deploy/: a real Prometheus evaluates the dashboards' queries; promtool
# tests the alert rules. internal/console: a headless browser.
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v chromium >/dev/null 2>&1 || need+=(chromium)

if ((${#need[@]})); then
  echo "test-deps: installing ${need[*]} from Debian packages" >&2
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# The console's browser test drives chromium with playwright-core (no
# browser download: it uses /usr/bin/chromium), installed once outside the
# checkout.
PLAYWRIGHT_VERSION=1.65.1
node_dir="${XDG_CACHE_HOME:-$HOME/.cache}/sluice/node"
if ! grep -qs "\"version\": \"$PLAYWRIGHT_VERSION\"" "$node_dir/node_modules/playwright-core/package.json"; then
  echo "test-deps: installing playwright-core@$PLAYWRIGHT_VERSION from npm into $node_dir" >&2
  mkdir -p "$node_dir"
  npm install --silent --no-audit --no-fund --prefix "$node_dir" "playwright-core@$PLAYWRIGHT_VERSION" >/dev/null
fi
