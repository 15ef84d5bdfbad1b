//! The database pool and migrations.
//!
//! The pool connects lazily: a process whose database is down at start still starts, reports
//! not ready, and keeps trying in the background (docs/reference.md, Operations and metrics). Once the database
//! answers, pending migrations from `migrations/` are applied (unless `DATABASE_MIGRATE=false`).
//! sqlx's migrator holds a Postgres advisory lock while it works, so many copies starting at
//! once apply each migration exactly once and the others wait, then find nothing to do.

use std::{str::FromStr, time::Duration};

use sqlx::{
    PgPool,
    postgres::{PgConnectOptions, PgPoolOptions},
};
use tokio::sync::watch;

use crate::{
    config::{Config, ConfigError},
    shutdown::Shutdown,
    telemetry::Throttle,
};

/// The migrations, embedded in every binary that uses the database.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// Parses `DATABASE_URL` without connecting, so a malformed URL is a configuration error.
pub fn connect_options(config: &Config) -> Result<PgConnectOptions, ConfigError> {
    PgConnectOptions::from_str(config.database_url.expose()).map_err(|_| ConfigError {
        variable: "DATABASE_URL".into(),
        reason: "is not a valid PostgreSQL URL".into(),
    })
}

#[derive(Clone)]
pub struct Database {
    pool: PgPool,
    ready: watch::Sender<bool>,
}

impl Database {
    /// Creates the pool and starts the background task that waits for the database and
    /// migrates it. Returns at once.
    pub fn start(config: &Config, options: PgConnectOptions, shutdown: &Shutdown) -> Database {
        let options = options.application_name("switchboard");
        let pool = PgPoolOptions::new()
            .max_connections(config.database_max_connections)
            .acquire_timeout(Duration::from_secs(3))
            // sqlx prepares each statement once per connection, and after five runs PostgreSQL
            // may switch it to a generic plan and keep it: a plan made while `messages` was
            // nearly empty (a hash join over a sequential scan) stayed in use as the table grew,
            // and a fresh database slowed down minute by minute (seen with switchboard-loadgen
            // chat). Re-planning every statement everywhere cost the hot path more than it
            // saved, so the fix lives with the statements that had the problem: the chat batch
            // is a function whose statements are all primary-key or unique-index lookups (see
            // its migration), and the few range and join queries whose best plan depends on the
            // table's size are run unprepared (`persistent(false)`), so planned with their
            // actual parameters every time.
            .connect_lazy_with(options.clone());
        let (ready, _) = watch::channel(false);
        let database = Database { pool, ready };
        tokio::spawn(database.clone().prepare(options, config.database_migrate, shutdown.clone()));
        database
    }

    async fn prepare(self, options: PgConnectOptions, migrate: bool, shutdown: Shutdown) {
        let mut delays = crate::bus::backoff();
        let mut refusals = Throttle::new(CREDENTIALS_REMINDER);
        loop {
            let attempt = async {
                if migrate {
                    run_migrations(&options).await
                } else {
                    sqlx::query("SELECT 1").execute(&self.pool).await.map(drop).map_err(anyhow::Error::from)
                }
            };
            match attempt.await {
                Ok(()) => {
                    tracing::info!(migrated = migrate, "database ready");
                    self.ready.send_replace(true);
                    return;
                }
                Err(error) if credentials_refused(&error) => {
                    // Retrying alone will not help, but the role or password may be fixed
                    // without a restart: keep trying, and say what to fix once, then as a
                    // reminder now and then. The URL is never logged (it holds the password).
                    if refusals.ready() {
                        tracing::error!(
                            error = format!("{error:#}"),
                            "the database refused the credentials in DATABASE_URL; set DATABASE_URL to \
                             postgres://<user>:<password>@<host>:<port>/<database> with a role that exists \
                             (deploy/services.sh creates switchboard/switchboard); retrying"
                        );
                    }
                }
                Err(error) => tracing::warn!(error = format!("{error:#}"), "database not ready; retrying"),
            }
            let delay = delays.next().unwrap_or(Duration::from_secs(5));
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.triggered() => return,
            }
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Waits until the database was reached (and migrated); false if shutdown came first.
    pub async fn wait_ready(&self, shutdown: &Shutdown) -> bool {
        let mut ready = self.ready.subscribe();
        tokio::select! {
            result = ready.wait_for(|r| *r) => result.is_ok(),
            _ = shutdown.triggered() => false,
        }
    }

    /// The readiness check: migrated once, and answering now.
    pub async fn check(&self) -> Result<(), String> {
        if !*self.ready.borrow() {
            return Err("not migrated yet".into());
        }
        let ping = sqlx::query("SELECT 1").execute(&self.pool);
        match tokio::time::timeout(Duration::from_secs(2), ping).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err("no answer within 2 s".into()),
        }
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// How often a database that keeps refusing our credentials is reported again.
const CREDENTIALS_REMINDER: Duration = Duration::from_secs(30);

/// Applies the pending migrations on a connection of their own.
///
/// The migrator starts with `CREATE TABLE IF NOT EXISTS _sqlx_migrations`, and PostgreSQL
/// answers every start after the first with a NOTICE ("relation already exists, skipping"),
/// which sqlx logs at INFO. That connection therefore asks only for warnings and errors
/// (`client_min_messages`), so a real warning from a migration still shows, and the pool's
/// connections keep the server's setting. (A one-connection pool rather than a bare
/// connection: a task running sqlx's migrator on a `&mut PgConnection` does not compile as
/// `Send`, since `Migrator::run`'s `Acquire` bound asks for every lifetime.)
async fn run_migrations(options: &PgConnectOptions) -> anyhow::Result<()> {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(3))
        .connect_lazy_with(options.clone().options([("client_min_messages", "warning")]));
    let result = MIGRATOR.run(&pool).await;
    pool.close().await;
    Ok(result?)
}

/// Whether the database refused to let us in: SQLSTATE class 28 (invalid authorization: an
/// unknown role, a wrong password, no `pg_hba.conf` entry). Anywhere in the cause chain, since
/// the migrator wraps it.
pub fn credentials_refused(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| match cause.downcast_ref::<sqlx::Error>() {
        Some(sqlx::Error::Database(error)) => error.code().is_some_and(|code| code.starts_with("28")),
        _ => false,
    })
}

/// Whether trying the same statement again later may succeed: the database was unreachable,
/// busy, restarting, or chose this transaction as a deadlock or serialization victim. Every
/// other failure is permanent for the data that caused it (a value PostgreSQL refuses, a
/// constraint, a statement it cannot run) and retrying it would fail the same way for ever, so
/// a consumer refuses or parks that one message instead (see `bus::Outcome`).
pub fn is_transient(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(error) => {
            let code = error.code();
            let code = code.as_deref().unwrap_or("");
            // 08 connection exception, 40 transaction rollback (deadlock, serialization),
            // 53 insufficient resources, 57 operator intervention (shutdown, cancel), 58 system
            // error; 55P03 lock not available.
            matches!(code.get(..2), Some("08" | "40" | "53" | "57" | "58")) || code == "55P03"
        }
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_trouble_is_transient_and_bad_data_is_not() {
        assert!(is_transient(&sqlx::Error::PoolTimedOut));
        assert!(is_transient(&sqlx::Error::Io(std::io::Error::other("reset"))));
        assert!(!is_transient(&sqlx::Error::RowNotFound));
        assert!(!is_transient(&sqlx::Error::ColumnNotFound("x".into())));
    }
}
