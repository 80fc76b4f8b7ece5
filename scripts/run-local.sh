#!/usr/bin/env bash
# make run: bring a fresh checkout to a running daemon.
#   1. migrate the database (RECONCILER_DATABASE_URL, default ./reconciler.db)
#   2. if no node is registered: use the system engine if one answers, else start a sandboxed
#      dockerd under .sandbox/ (stays up between runs; `make sandbox-down` stops it). It listens
#      on its unix socket only: a plain TCP port would make every local user root.
#   3. apply examples/desired.yaml, show it, and run the daemon in the foreground
set -euo pipefail
cd "$(dirname "$0")/.."
rc=.venv/bin/reconciler
py=.venv/bin/python

$rc db upgrade

if [ -z "$($rc node ls -q 2>/dev/null)" ]; then
    if docker -H unix:///var/run/docker.sock version >/dev/null 2>&1; then
        url=unix:///var/run/docker.sock
        echo "registering the system engine ($url) as node 'local'"
    else
        echo "no engine reachable: starting a sandboxed dockerd under .sandbox/ (unix socket only)"
        url=$($py -m sandbox engines up --dir .sandbox --count 1 --unix-only | awk 'NR==1 {print $2}')
    fi
    $py -c "import sys; from sandbox import images; images.import_busybox(sys.argv[1])" "$url"
    $rc node add local "$url"
fi

$rc apply -f examples/desired.yaml
$rc get
exec $rc run
