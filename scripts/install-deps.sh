#!/usr/bin/env bash
# Install the system packages the tests and `make run` need, on Debian 12 as root.
# Idempotent: installs only what is missing (one `apt-get update` first), silent otherwise.
#   docker.io       dockerd, containerd, runc and the docker CLI (sandboxed engines)
#   busybox-static  a static /bin/busybox for the `busybox:local` image
#   postgresql      initdb/pg_ctl/psql for the throwaway PostgreSQL
#   sqlite3, openssl
#   docker-registry a throwaway registry on loopback (image pull tests)
#   apache2-utils   htpasswd, for that registry's basic auth
#   prometheus      prometheus and promtool: a real server scrapes /metrics in the tests
set -euo pipefail

missing=()

have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

static_busybox() {
    # busybox-static ships /bin/busybox statically linked; Debian's `busybox` is dynamic
    have_pkg busybox-static && return 0
    [ -x /bin/busybox ] || return 1
    ! ldd /bin/busybox >/dev/null 2>&1 # "not a dynamic executable": exit status 1
}

command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
static_busybox || missing+=(busybox-static)
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || missing+=(postgresql)
command -v sqlite3 >/dev/null 2>&1 || missing+=(sqlite3)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v docker-registry >/dev/null 2>&1 || missing+=(docker-registry)
command -v htpasswd >/dev/null 2>&1 || missing+=(apache2-utils)
{ command -v prometheus && command -v promtool; } >/dev/null 2>&1 || missing+=(prometheus)

if [ "${#missing[@]}" -eq 0 ]; then
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: missing ${missing[*]}; run this script as root" >&2
    exit 1
fi

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "${missing[@]}" >/dev/null
# The packages must not leave daemons running: tests start their own, by pid.
