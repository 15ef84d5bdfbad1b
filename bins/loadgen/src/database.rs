//! PostgreSQL's own count of transactions, to say how many one chat message costs.

use std::time::Duration;

use anyhow::Context as _;
use serde::Serialize;
use sqlx::{Connection, PgConnection};

/// Transactions the database ran while the system handled `chat_messages`.
#[derive(Clone, Debug, Serialize)]
pub struct TransactionCount {
    pub chat_messages: u64,
    pub transactions: u64,
    pub per_message: f64,
}

/// How long PostgreSQL (15 and later) may keep an idle backend's counts before they reach
/// `pg_stat_database`, plus a margin.
const STATISTICS_LAG: Duration = Duration::from_millis(11_000);

pub struct Database {
    url: String,
}

impl Database {
    pub fn new(url: &str) -> Self {
        Self { url: url.to_owned() }
    }

    /// Committed and rolled-back transactions of the database so far, once every backend has
    /// reported what it did.
    pub async fn transactions(&self) -> anyhow::Result<u64> {
        tokio::time::sleep(STATISTICS_LAG).await;
        let mut connection = PgConnection::connect(&self.url).await.context("connecting to the database")?;
        let (count,): (i64,) = sqlx::query_as(
            "SELECT (xact_commit + xact_rollback)::bigint FROM pg_stat_database WHERE datname = current_database()",
        )
        .fetch_one(&mut connection)
        .await
        .context("reading pg_stat_database")?;
        let _ = connection.close().await;
        // This connection's own query is one transaction more; it is left in: one in thousands.
        Ok(u64::try_from(count).unwrap_or(0))
    }

    pub async fn per_message(&self, before: u64, chat_messages: u64) -> anyhow::Result<TransactionCount> {
        let transactions = self.transactions().await?.saturating_sub(before);
        Ok(TransactionCount {
            chat_messages,
            transactions,
            per_message: transactions as f64 / chat_messages.max(1) as f64,
        })
    }
}
