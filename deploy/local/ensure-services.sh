#!/usr/bin/env bash
# Makes sure PostgreSQL and RabbitMQ answer on their default local ports. Where one does not, it
# is installed from Debian's packages (if missing) and started. Idempotent; safe to run often.
set -euo pipefail

PG_PORT=5432
AMQP_PORT=5672

say() { printf '==> %s\n' "$*"; }
answers() { (exec 3<>"/dev/tcp/127.0.0.1/$1") >/dev/null 2>&1; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
as_postgres() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else sudo -u postgres "$@"; fi; }
wait_for() { # port, what, seconds
  local i
  for ((i = 0; i < $3 * 2; i++)); do answers "$1" && return 0; sleep 0.5; done
  echo "error: $2 does not answer on 127.0.0.1:$1 after $3 s" >&2
  return 1
}

packages=()
answers "$PG_PORT" || command -v pg_ctlcluster >/dev/null || packages+=(postgresql)
command -v psql >/dev/null || packages+=(postgresql-client)
answers "$AMQP_PORT" || command -v rabbitmq-server >/dev/null || packages+=(rabbitmq-server)
command -v curl >/dev/null || packages+=(curl)
if ((${#packages[@]})); then
  say "installing ${packages[*]} from Debian's packages"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${packages[@]}" >/dev/null
fi

if ! answers "$PG_PORT"; then
  say "starting PostgreSQL"
  version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1)
  if [ -z "$version" ]; then
    version=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
    as_root pg_createcluster "$version" main
  fi
  as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start || as_root pg_ctlcluster "$version" main start
  wait_for "$PG_PORT" PostgreSQL 60
  # A fresh cluster asks for a password over TCP; give `postgres` the one the defaults use.
  as_postgres psql -q -c "ALTER USER postgres PASSWORD 'postgres'" >/dev/null
fi

if ! answers "$AMQP_PORT"; then
  say "starting RabbitMQ"
  as_root rabbitmq-server -detached >/dev/null 2>&1 || as_root service rabbitmq-server start
  wait_for "$AMQP_PORT" RabbitMQ 120
fi

say "PostgreSQL answers on 127.0.0.1:$PG_PORT, RabbitMQ on 127.0.0.1:$AMQP_PORT"
