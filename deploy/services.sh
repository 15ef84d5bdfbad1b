#!/usr/bin/env bash
# Makes sure RabbitMQ and PostgreSQL are installed, running and set up for Switchboard on this
# machine (Debian). Safe to run again and again: every step checks before it acts.
#
#   - installs rabbitmq-server and postgresql with apt-get when they are missing;
#   - starts them when they are down;
#   - enables RabbitMQ's management plugin (the tests use its HTTP API for per-test vhosts);
#   - creates the PostgreSQL role `switchboard` (password `switchboard`, allowed to create
#     databases, which the tests do) and the database `switchboard`. A fresh Debian PostgreSQL
#     allows only peer auth on its socket and password auth over TCP, so we connect as the
#     `postgres` system user for the set-up and use a password afterwards.
#
# Used by deploy/dev (start everything) and tests/run (the test command, which CI runs).
set -euo pipefail

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

need_install=()
command -v rabbitmq-server >/dev/null 2>&1 || need_install+=(rabbitmq-server)
command -v pg_ctlcluster >/dev/null 2>&1 || need_install+=(postgresql)
command -v node >/dev/null 2>&1 || need_install+=(nodejs)
command -v npm >/dev/null 2>&1 || need_install+=(npm)
command -v curl >/dev/null 2>&1 || need_install+=(curl)
if [ ${#need_install[@]} -gt 0 ]; then
  log "installing ${need_install[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_install[@]}" >/dev/null
fi

# --- PostgreSQL -----------------------------------------------------------------------------
pg_version=$(ls /etc/postgresql | sort -V | tail -n 1)
if ! pg_isready -q -h 127.0.0.1 -p 5432; then
  log "starting PostgreSQL $pg_version"
  as_root pg_ctlcluster --skip-systemctl-redirect "$pg_version" main start || true
  for _ in $(seq 1 60); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 0.5; done
  pg_isready -q -h 127.0.0.1 -p 5432 || { echo "PostgreSQL did not start" >&2; exit 1; }
fi
psql_admin() { as_root runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 "$@"; }
if ! psql_admin -tAc "SELECT 1 FROM pg_roles WHERE rolname = 'switchboard'" | grep -q 1; then
  log "creating the PostgreSQL role switchboard"
  psql_admin -c "CREATE ROLE switchboard LOGIN CREATEDB PASSWORD 'switchboard'"
fi
if ! psql_admin -tAc "SELECT 1 FROM pg_database WHERE datname = 'switchboard'" | grep -q 1; then
  log "creating the database switchboard"
  psql_admin -c "CREATE DATABASE switchboard OWNER switchboard"
fi

# --- RabbitMQ -------------------------------------------------------------------------------
rabbit_up() { as_root rabbitmqctl -q status >/dev/null 2>&1; }
if ! rabbit_up; then
  log "starting RabbitMQ"
  as_root rabbitmq-server -detached >/dev/null 2>&1 || true
  for _ in $(seq 1 60); do rabbit_up && break; sleep 1; done
  rabbit_up || { echo "RabbitMQ did not start" >&2; exit 1; }
fi
if ! curl -fsS -o /dev/null -u guest:guest http://127.0.0.1:15672/api/overview 2>/dev/null; then
  log "enabling RabbitMQ's management plugin"
  as_root rabbitmq-plugins enable --quiet rabbitmq_management >/dev/null
  for _ in $(seq 1 120); do
    curl -fsS -o /dev/null -u guest:guest http://127.0.0.1:15672/api/overview 2>/dev/null && break
    sleep 0.5
  done
fi
curl -fsS -o /dev/null -u guest:guest http://127.0.0.1:15672/api/overview \
  || { echo "RabbitMQ's management API does not answer on 127.0.0.1:15672" >&2; exit 1; }
