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
# Which pages may open a socket. The demo page is another origin than the edge, so it is always
# let in: as localhost, and by this machine's name and IPv4 addresses for a browser on another
# machine (the demo server listens on every IPv4 address). By default only it is:
# ALLOWED_ORIGINS=* would let any page in, and the edge warns about that at start, which is no
# way to greet a newcomer. Clients that send no Origin (Node, curl, apps) are never refused.
demo_origins="http://localhost:$DEMO_PORT,http://127.0.0.1:$DEMO_PORT"
for demo_host in $(hostname 2>/dev/null) $(hostname -I 2>/dev/null); do
  case "$demo_host" in
    *:*) ;; # IPv6: the demo server does not listen there
    *) demo_origins="$demo_origins,http://$(printf '%s' "$demo_host" | tr '[:upper:]' '[:lower:]'):$DEMO_PORT" ;;
  esac
done
if [ -z "${ALLOWED_ORIGINS:-}" ]; then
  export ALLOWED_ORIGINS="$demo_origins"
elif [ "$ALLOWED_ORIGINS" != "*" ]; then
  export ALLOWED_ORIGINS="$ALLOWED_ORIGINS,$demo_origins"
fi
unset demo_origins demo_host
