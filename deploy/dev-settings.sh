# The settings deploy/dev starts the binaries and the demo page with. Sourced, not run: by
# deploy/dev, and by the newcomer test (tests/e2e/newcomer.rs), which starts the binaries of its
# walk through the README with these same settings. A variable already set wins.

# No TLS to the database on this same host: it would only cost a handshake per connection
# (most of a worker's start-up time) and encryption on every query.
export DATABASE_URL="${DATABASE_URL:-postgres://switchboard:switchboard@127.0.0.1:5432/switchboard?sslmode=disable}"
export INGRESS_API_KEYS="${INGRESS_API_KEYS:-dev-key}"
export RUST_LOG="${RUST_LOG:-info}"
export LOG_FORMAT="${LOG_FORMAT:-pretty}"
export SHUTDOWN_GRACE_MS="${SHUTDOWN_GRACE_MS:-3000}"
export DEMO_PORT="${DEMO_PORT:-5173}"
# The demo page is another origin than the edge: let it connect when origins are restricted.
if [ -n "${ALLOWED_ORIGINS:-}" ] && [ "$ALLOWED_ORIGINS" != "*" ]; then
  export ALLOWED_ORIGINS="$ALLOWED_ORIGINS,http://localhost:$DEMO_PORT,http://127.0.0.1:$DEMO_PORT"
fi
