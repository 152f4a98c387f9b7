#!/usr/bin/env bash
# Installs what the tests need (a venv with the test extras; Debian packages for
# the real servers the tests use, when missing), runs the whole test suite, and
# stops the servers it started. Exit status: pytest's (0 when every test passed).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)

# 1. Python: one venv in the repo, the package editable with its test extras.
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[test]"

# 2. Real servers (Debian packages), installed when missing, started on loopback
#    in a throwaway directory, stopped on exit.
RUN_DIR=$(mktemp -d /tmp/tidegate-test-servers.XXXXXX)
chmod 755 "$RUN_DIR"  # the postgres user must reach its data dir inside
STARTED=()
cleanup() {
  for stop in "${STARTED[@]:-}"; do [ -n "$stop" ] && eval "$stop" >/dev/null 2>&1 || true; done
  rm -rf "$RUN_DIR"
}
trap cleanup EXIT

apt_updated=0
need_pkg() {  # need_pkg COMMAND PACKAGE...
  if ! command -v "$1" >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/"$1" >/dev/null 2>&1; then
    shift
    if [ "$apt_updated" = 0 ]; then apt-get update -qq; apt_updated=1; fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  fi
}

free_port() { .venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

start_postgres() {
  need_pkg initdb postgresql
  local bin; bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  local data="$RUN_DIR/pg" port; port=$(free_port)
  mkdir -p "$data"; chown postgres: "$data"
  su postgres -s /bin/sh -c "$bin/initdb -D $data -U postgres --auth=trust -E UTF8" >/dev/null
  su postgres -s /bin/sh -c "$bin/pg_ctl -D $data -o '-k $data -h 127.0.0.1 -p $port -c max_connections=300' -l $data/log -w start" >/dev/null
  STARTED+=("su postgres -s /bin/sh -c '$bin/pg_ctl -D $data -m immediate stop'")
  export TIDEGATE_TEST_POSTGRES="postgresql://postgres@127.0.0.1:$port/postgres"
}

start_redis() {
  need_pkg redis-server redis-server
  local port; port=$(free_port)
  redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no --daemonize yes \
    --pidfile "$RUN_DIR/redis.pid" --dir "$RUN_DIR" >/dev/null
  STARTED+=("kill \$(cat $RUN_DIR/redis.pid)")
  export TIDEGATE_TEST_REDIS="redis://127.0.0.1:$port/0"
}

# Which servers the suite uses: a test that needs one skips only when its
# variable is unset, and CI always sets them, so none is silently skipped there.
for server in ${TIDEGATE_TEST_SERVERS-postgres redis}; do
  "start_$server"
done

# 3. The whole suite. pytest's exit 5 ("no tests ran") is a failure here.
set +e
.venv/bin/python -m pytest "$@"
status=$?
set -e
if [ "$status" = 5 ]; then echo "no tests ran"; status=1; fi
exit "$status"
