//! The skeleton every binary shares: `main` → [`main`] loads the configuration (exit 64 on a
//! bad one, before any port is bound), starts tracing and the runtime, and calls the binary's
//! `run(config, shutdown)`; [`Process`] is what `run` builds on: the bound listener, the bus,
//! the database, readiness, and the one shutdown path.

use std::{future::Future, net::SocketAddr, process::ExitCode, time::Duration};

use axum::Router;
use tokio::net::TcpListener;

use crate::{
    bus::Bus,
    config::{Config, EXIT_CONFIG, Role},
    db::{self, Database},
    health::{self, Readiness},
    shutdown::Shutdown,
    telemetry,
};

/// The part of the grace period kept for closing the bus and the database, at most.
const CLOSE_RESERVE: Duration = Duration::from_secs(1);
/// How long the runtime may take to drop what still runs once `run` returned.
const RUNTIME_STOP: Duration = Duration::from_millis(100);

/// The whole of a binary's `main`: configuration, tracing, runtime, signals, exit code.
pub fn main<F, Fut>(role: Role, run: F) -> ExitCode
where
    F: FnOnce(Config, Shutdown) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let config = match Config::load(role) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("{}: {error}", role.binary());
            return ExitCode::from(EXIT_CONFIG as u8);
        }
    };
    let traces = telemetry::init_tracing(&config, role.binary());
    telemetry::init_metrics();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, binary = role.binary(), "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        let shutdown = Shutdown::on_signals(role.binary());
        run(config, shutdown).await
    });
    // Work still running past the grace period (a query the database never answers) is
    // dropped, not waited for.
    runtime.shutdown_timeout(RUNTIME_STOP);
    if let Some(traces) = traces {
        traces.stop();
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), binary = role.binary(), "stopped on an error");
            ExitCode::FAILURE
        }
    }
}

/// The running parts every process has.
pub struct Process {
    pub role: Role,
    pub config: Config,
    pub shutdown: Shutdown,
    pub bus: Bus,
    /// Present for the workers, and for the edge in `database` auth mode.
    pub database: Option<Database>,
    listener: TcpListener,
}

impl Process {
    /// Checks what is left of the configuration, binds the HTTP port, and starts the bus and
    /// (if `with_database`) the database in the background.
    pub async fn start(
        role: Role,
        config: Config,
        shutdown: Shutdown,
        with_database: bool,
    ) -> anyhow::Result<Self> {
        let db_options = if with_database { Some(db::connect_options(&config)?) } else { None };
        let addr = SocketAddr::new(config.listen_host, config.http_port(role));
        let listener =
            TcpListener::bind(addr).await.map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
        let bus = Bus::start(&config, role.binary(), &shutdown);
        let database = db_options.map(|options| Database::start(&config, options, &shutdown));
        Ok(Self { role, config, shutdown, bus, database, listener })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Readiness: the bus, and the database when there is one.
    pub fn readiness(&self) -> Readiness {
        let bus = self.bus.clone();
        let mut readiness = Readiness::new(&self.shutdown).check("bus", move || {
            let ready = bus.is_ready();
            async move { if ready { Ok(()) } else { Err("not connected".to_owned()) } }
        });
        if let Some(database) = self.database.clone() {
            readiness = readiness.check("database", move || {
                let database = database.clone();
                async move { database.check().await }
            });
        }
        readiness
    }

    /// Waits until the database (if any) is migrated and the bus is connected; false if
    /// shutdown came first. Workers call this before they consume.
    pub async fn wait_ready(&self) -> bool {
        if let Some(database) = &self.database
            && !database.wait_ready(&self.shutdown).await
        {
            return false;
        }
        self.bus.wait_ready().await
    }

    /// Serves `routes` plus the health routes until shutdown, then drains in-flight work
    /// within `SHUTDOWN_GRACE_MS` and closes the bus and the database.
    pub async fn serve(self, routes: Router) -> anyhow::Result<()> {
        let readiness = self.readiness();
        self.serve_with(routes, readiness).await
    }

    /// [`Process::serve`] with readiness checks of the caller's choosing (the edge adds its
    /// delivery queue to the bus and database).
    pub async fn serve_with(self, routes: Router, readiness: Readiness) -> anyhow::Result<()> {
        metrics::gauge!("switchboard_build_info", "binary" => self.role.binary(), "version" => env!("CARGO_PKG_VERSION"))
            .set(1.0);
        let app = health::with_fallbacks(routes.merge(health::router(readiness, telemetry::init_metrics())));
        let addr = self.listener.local_addr()?;
        tracing::info!(%addr, binary = self.role.binary(), "listening");
        let token = self.shutdown.token().clone();
        let server = axum::serve(self.listener, app.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(async move { token.cancelled().await });
        let grace = self.config.shutdown_grace();
        // The HTTP server stops accepting at shutdown; open connections (long-polling, the
        // websockets the edge closes itself) get the grace period, not more.
        let server = self.shutdown.spawn(async move { server.await });
        self.shutdown.triggered().await;
        // The whole stop fits in the grace period, whatever the bus and the database do: work
        // gets it less what closing needs, and closing (which waits for the database's
        // connections to come back, and for the broker to answer) is cut off at its end.
        let stopping = tokio::time::Instant::now();
        let closing = (grace / 4).min(CLOSE_RESERVE);
        if !self.shutdown.drain(grace - closing).await {
            tracing::warn!(
                binary = self.role.binary(),
                grace_ms = grace.as_millis() as u64,
                "in-flight work did not finish within the grace period; what it held goes back to the broker"
            );
        }
        server.abort();
        let left = grace.saturating_sub(stopping.elapsed()).saturating_sub(RUNTIME_STOP);
        let closed = tokio::time::timeout(left, async {
            self.bus.close().await;
            if let Some(database) = &self.database {
                database.close().await;
            }
        })
        .await;
        if closed.is_err() {
            tracing::warn!(
                binary = self.role.binary(),
                "the bus or the database did not close in time; leaving them"
            );
        }
        tracing::info!(binary = self.role.binary(), "stopped");
        Ok(())
    }
}
