#!/usr/bin/env bash
# Installs what the tests need (a venv with the test extras; Debian packages for
# the real servers the tests use, when missing), runs the code checks (ruff lint and
# format, mypy, the layer contract), runs the whole test suite, and stops the
# servers it started. Exit status: 1 when a check failed, else pytest's (0 when
# every test passed). Arguments go to pytest.
#
#   TIDEGATE_CHECKS=0         skip the code checks (default 1: they run first)
#   TIDEGATE_MATRIX=0         skip the oldest-versions run (default 1; see step 5);
#                   =only     run only that (the instrumentation tests at the oldest versions)
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)

# 1. Python: one venv in the repo, the package editable with its test extras.
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[test]"

# 2. Code checks, before anything starts: each problem is printed with what to run.
#    All of them run; then the run stops if one that counts failed.
checks_failed=0
check_failed() { echo "tidegate checks: $*" >&2; checks_failed=1; }
if [ "${TIDEGATE_CHECKS:-1}" != 0 ]; then
  echo "== ruff check src tests bench"
  .venv/bin/ruff check src tests bench || check_failed "ruff check found problems: fix them ('.venv/bin/ruff check --fix src tests bench' fixes some)"
  echo "== ruff format --check src tests bench"
  .venv/bin/ruff format --check src tests bench || check_failed "files are not formatted: run '.venv/bin/ruff format src tests bench'"
  echo "== mypy (pyproject.toml: all of src/, strict on tidegate.core and tidegate.rules)"
  .venv/bin/mypy || check_failed "mypy found errors: fix them (the configuration is in pyproject.toml)"
  echo "== lint-imports (the layer contract in pyproject.toml)"
  .venv/bin/lint-imports || check_failed "lint-imports: the layer contract is broken (see the broken contracts above)"
  if [ "$checks_failed" != 0 ]; then
    echo "tidegate checks failed; the tests did not run (TIDEGATE_CHECKS=0 skips the checks)" >&2
    exit 1
  fi
fi

# 3. Real servers (Debian packages), installed when missing, started on loopback
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

# The gateway's bench (bench/gateway.py) compares against nginx under wrk: both from Debian.
need_pkg nginx nginx-light
need_pkg wrk wrk

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

start_rabbitmq() {
  need_pkg rabbitmq-server rabbitmq-server
  local dir="$RUN_DIR/rabbitmq" port dist epmd_port; port=$(free_port); dist=$(free_port); epmd_port=$(free_port)
  mkdir -p "$dir"
  echo "[]." > "$dir/enabled_plugins"
  echo "[{kernel, [{inet_dist_use_interface, {127,0,0,1}}]}]." > "$dir/advanced.config"
  : > "$dir/rabbitmq.conf"; : > "$dir/rabbitmq-env.conf"
  # Its own node name, ports (AMQP, distribution, epmd) and dirs, all on loopback.
  local env="HOME=$dir RABBITMQ_NODENAME=tidegate-test-$port@localhost RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
    RABBITMQ_NODE_PORT=$port RABBITMQ_DIST_PORT=$dist ERL_EPMD_PORT=$epmd_port ERL_EPMD_ADDRESS=127.0.0.1
    RABBITMQ_MNESIA_BASE=$dir/mnesia RABBITMQ_LOG_BASE=$dir/log RABBITMQ_PID_FILE=$dir/rabbit.pid
    RABBITMQ_ENABLED_PLUGINS_FILE=$dir/enabled_plugins RABBITMQ_CONFIG_FILE=$dir/rabbitmq
    RABBITMQ_ADVANCED_CONFIG_FILE=$dir/advanced.config RABBITMQ_CONF_ENV_FILE=$dir/rabbitmq-env.conf"
  env $env /usr/lib/rabbitmq/bin/rabbitmq-server >"$dir/server.out" 2>&1 &
  env=$(echo $env)  # one line, for the eval in cleanup
  STARTED+=("env $env /usr/lib/rabbitmq/bin/rabbitmqctl stop; env $env epmd -kill")
  env $env /usr/lib/rabbitmq/bin/rabbitmqctl wait --timeout 90 "$dir/rabbit.pid" >/dev/null
  export TIDEGATE_TEST_RABBITMQ="amqp://guest:guest@127.0.0.1:$port/"
}

start_etcd() {  # a 3-member cluster on loopback: the control plane's etcd store (tests/control)
  need_pkg etcd etcd-server
  need_pkg etcdctl etcd-client
  local cluster="" clients=() peers=() i
  for i in 1 2 3; do clients+=("$(free_port)"); peers+=("$(free_port)"); cluster+="${cluster:+,}m$i=http://127.0.0.1:${peers[$((i-1))]}"; done
  for i in 1 2 3; do
    local dir="$RUN_DIR/etcd$i" client=${clients[$((i-1))]} peer=${peers[$((i-1))]}
    mkdir -p "$dir"
    etcd --name "m$i" --data-dir "$dir/data" --initial-cluster-token "tidegate-test-$$" \
      --listen-client-urls "http://127.0.0.1:$client" --advertise-client-urls "http://127.0.0.1:$client" \
      --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
      --initial-cluster "$cluster" --initial-cluster-state new >"$dir/log" 2>&1 &
    echo $! >"$dir/pid"
    STARTED+=("kill -KILL \$(cat $dir/pid)")  # throwaway data: a leader alone waits on SIGTERM
  done
  local endpoints; endpoints=$(printf 'http://127.0.0.1:%s,' "${clients[@]}"); endpoints=${endpoints%,}
  local tries=0
  until ETCDCTL_API=3 etcdctl --endpoints="$endpoints" endpoint health >/dev/null 2>&1; do
    tries=$((tries + 1))
    if [ "$tries" -gt 100 ]; then echo "tidegate: etcd did not start; its log:" >&2; cat "$RUN_DIR"/etcd1/log >&2; exit 1; fi
    sleep 0.2
  done
  export TIDEGATE_TEST_ETCD="$endpoints"
}

# The Kubernetes tests' tools: openssl (the manifests' certificates) and iproute2 (the multi-host
# run's network namespaces; it skips unless root).
need_pkg openssl openssl
need_pkg ip iproute2

# Which servers the suite uses: a test that needs one skips only when its
# variable is unset, and CI always sets them, so none is silently skipped there.
for server in ${TIDEGATE_TEST_SERVERS-postgres redis rabbitmq etcd}; do
  "start_$server"
done

# The console's browser tests drive Debian's chromium (Playwright's own browsers cannot be
# downloaded here; the tests pass executable_path=/usr/bin/chromium).
need_pkg chromium chromium

# 4. The whole suite. pytest's exit 5 ("no tests ran") is a failure here.
status=0
if [ "${TIDEGATE_MATRIX:-1}" != only ]; then
  set +e
  .venv/bin/python -m pytest "$@"
  status=$?
  set -e
  if [ "$status" = 5 ]; then echo "no tests ran"; status=1; fi
fi

# 5. The version matrix: the instrumentation tests again, in a second venv (built once) holding
#    the oldest supported version of each library scripts/oldest.txt names (the suite above ran
#    the newest, pinned in pyproject.toml). Only on a whole run (no test path among the
#    arguments; options are passed on); TIDEGATE_MATRIX=0 skips it.
MATRIX_TESTS=(tests/agent/instrumentation)
matrix_options=()
whole_run=1
for arg in "$@"; do
  if [ -e "${arg%%::*}" ]; then whole_run=0; else matrix_options+=("$arg"); fi
done
if [ "${TIDEGATE_MATRIX:-1}" = only ] || { [ "$status" = 0 ] && [ "$whole_run" = 1 ] && [ "${TIDEGATE_MATRIX:-1}" != 0 ]; }; then
  echo "== the instrumentation tests at the oldest supported versions (scripts/oldest.txt)"
  if [ ! -x .venv-oldest/bin/python ]; then
    python3 -m venv .venv-oldest
  fi
  # tidegate without its pins (they name the newest httpx, starlette and uvicorn), then the old ones:
  # pip's note that tidegate's pins are not met is expected here.
  .venv-oldest/bin/python -m pip install -q --disable-pip-version-check --no-deps -e .
  if ! installed=$(.venv-oldest/bin/python -m pip install -q --disable-pip-version-check -r scripts/oldest.txt 2>&1); then
    echo "$installed"; echo "tidegate: the oldest versions (scripts/oldest.txt) could not be installed" >&2; exit 1
  fi
  grep -v "^tidegate .* requires\|dependency resolver does not currently take\|WARNING: Location" <<<"$installed" || true
  set +e
  TIDEGATE_TEST_CONTROL_PLANE=0 .venv-oldest/bin/python -m pytest "${matrix_options[@]}" "${MATRIX_TESTS[@]}"
  status=$?
  set -e
  if [ "$status" = 5 ]; then echo "no tests ran at the oldest versions"; status=1; fi
fi
exit "$status"
