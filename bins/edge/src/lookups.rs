//! Session lookups in `database` auth mode: bounded, and shared by handshakes that arrive
//! together (issue 15, "Safe before authentication").
//!
//! What gathers: every handshake whose token neither cache of [`crate::auth`] knows sends it
//! here and waits. What bounds: at most `AUTH_LOOKUPS_IN_FLIGHT` queries run at once, each for
//! at most [`MAX_BATCH`] tokens. A handshake that finds a query slot free is looked up at once,
//! alone; handshakes that arrive while every slot is taken wait for the next one to free up,
//! and are then looked up together, by one query. So an idle edge adds no latency to a lone
//! connect, and a burst of connects (a reconnect storm, a flood of made-up tokens) costs the
//! database a few queries at a time instead of one per handshake, and never more connections
//! than the slots.
//!
//! The one query is `AUTH_SESSION_QUERY` itself, run once per token inside one statement:
//!
//! ```sql
//! SELECT switchboard_lookup.token, found.*
//! FROM unnest($1::text[]) AS switchboard_lookup(token)
//! CROSS JOIN LATERAL (<AUTH_SESSION_QUERY, with $1 replaced by switchboard_lookup.token>) AS found
//! ```
//!
//! so an operator's own query keeps its meaning without a batched twin, and the default one
//! is an index lookup per token. A query that PostgreSQL will not accept in that form (it
//! fails with a syntax or feature error, class 42 or 0A) turns batching off for the edge's
//! life, with one warning: each token of a batch is then looked up with the query as
//! configured, still within the batch's slot.
//!
//! One bad item: a token is text bound as a parameter, so no token can break the statement
//! for the others; a session row whose user id is not valid refuses that handshake only. A
//! failed query (database down) answers `unavailable` to every handshake of its batch.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use chrono::{DateTime, Utc};
use sqlx::{Row, postgres::PgRow};
use switchboard::db::Database;
use tokio::sync::{Semaphore, mpsc, oneshot};

/// The most tokens one query looks up. A burst larger than this waits for a second query.
pub const MAX_BATCH: usize = 256;

/// A session the query found.
#[derive(Clone, Debug)]
pub struct Found {
    /// The query's first column, as text (checked as a user id by the caller).
    pub user_id: Result<String, String>,
    /// The query's second column, when it has one and it is a timestamp with time zone.
    pub expires_at: Option<DateTime<Utc>>,
}

/// Why a lookup has no answer: the database could not be asked.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{0}")]
pub struct LookupFailed(String);

type Answer = Result<Option<Found>, LookupFailed>;

struct Request {
    token: String,
    answer: oneshot::Sender<Answer>,
}

/// The way in: [`Lookups::find`]. Cloning is cheap; the dispatcher ends when the last clone
/// is dropped.
#[derive(Clone)]
pub struct Lookups {
    requests: mpsc::UnboundedSender<Request>,
}

impl Lookups {
    /// Starts the dispatcher for `query` (which takes the token as `$1`).
    pub fn start(database: Database, query: &str, in_flight: u32) -> Self {
        let (requests, incoming) = mpsc::unbounded_channel();
        let runner = Arc::new(Runner {
            database,
            single: query.to_owned(),
            batched: batched(query),
            batching: AtomicBool::new(true),
        });
        let slots = Arc::new(Semaphore::new(usize::try_from(in_flight.max(1)).unwrap_or(1)));
        tokio::spawn(dispatch(incoming, runner, slots));
        Self { requests }
    }

    /// The session of `token`, `None` when the query finds none.
    pub async fn find(&self, token: &str) -> Answer {
        let (answer, answered) = oneshot::channel();
        let request = Request { token: token.to_owned(), answer };
        if self.requests.send(request).is_err() {
            return Err(LookupFailed("the lookup dispatcher has stopped".to_owned()));
        }
        metrics::gauge!("edge_session_lookups_waiting").increment(1.0);
        answered.await.unwrap_or_else(|_| Err(LookupFailed("the lookup was dropped".to_owned())))
    }
}

/// Takes a query slot, then everything waiting (up to [`MAX_BATCH`] tokens), and looks it up
/// in a task of its own; the slot is given back when that query is done.
async fn dispatch(
    mut incoming: mpsc::UnboundedReceiver<Request>,
    runner: Arc<Runner>,
    slots: Arc<Semaphore>,
) {
    while let Some(first) = incoming.recv().await {
        // While every slot is taken, later handshakes queue up behind `first`.
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        let mut batch: HashMap<String, Vec<oneshot::Sender<Answer>>> = HashMap::new();
        let mut taken = 1;
        batch.entry(first.token).or_default().push(first.answer);
        while batch.len() < MAX_BATCH {
            let Ok(next) = incoming.try_recv() else { break };
            taken += 1;
            // The same token twice in a batch is looked up once.
            batch.entry(next.token).or_default().push(next.answer);
        }
        metrics::gauge!("edge_session_lookups_waiting").decrement(f64::from(taken));
        let runner = runner.clone();
        tokio::spawn(async move {
            runner.answer(batch).await;
            drop(slot);
        });
    }
}

struct Runner {
    database: Database,
    /// `AUTH_SESSION_QUERY` as configured: one token as `$1`.
    single: String,
    /// The same, run for every token of a text array `$1` (see the module docs).
    batched: String,
    /// False once PostgreSQL refused `batched`.
    batching: AtomicBool,
}

impl Runner {
    async fn answer(&self, batch: HashMap<String, Vec<oneshot::Sender<Answer>>>) {
        let tokens: Vec<String> = batch.keys().cloned().collect();
        let found = self.look_up(&tokens).await;
        for (token, waiting) in batch {
            let answer = match &found {
                Ok(found) => Ok(found.get(&token).cloned()),
                Err(error) => Err(error.clone()),
            };
            for sender in waiting {
                // A handshake that gave up (its client left) no longer listens.
                let _ = sender.send(answer.clone());
            }
        }
    }

    async fn look_up(&self, tokens: &[String]) -> Result<HashMap<String, Found>, LookupFailed> {
        metrics::counter!("edge_session_lookup_tokens_total").increment(tokens.len() as u64);
        if self.batching.load(Ordering::Relaxed) {
            metrics::counter!("edge_session_lookups_total").increment(1);
            match sqlx::query(sqlx::AssertSqlSafe(self.batched.as_str()))
                .bind(tokens)
                .fetch_all(self.database.pool())
                .await
            {
                Ok(rows) => {
                    let mut found = HashMap::with_capacity(rows.len());
                    for row in rows {
                        let Ok(token) = row.try_get::<String, _>(0) else { continue };
                        // A query that finds several rows for a token: the first one counts,
                        // as with the query run alone.
                        found.entry(token).or_insert_with(|| read(&row, 1));
                    }
                    return Ok(found);
                }
                Err(error) if cannot_batch(&error) => {
                    self.batching.store(false, Ordering::Relaxed);
                    tracing::warn!(
                        %error,
                        "AUTH_SESSION_QUERY cannot be run for many tokens at once; looking sessions \
                         up one query per token from now on"
                    );
                }
                Err(error) => return Err(LookupFailed(error.to_string())),
            }
        }
        let queries = tokens.iter().map(|token| async move {
            metrics::counter!("edge_session_lookups_total").increment(1);
            let row = sqlx::query(sqlx::AssertSqlSafe(self.single.as_str()))
                .bind(token)
                .fetch_optional(self.database.pool())
                .await
                .map_err(|e| LookupFailed(e.to_string()))?;
            Ok::<_, LookupFailed>(row.map(|row| (token.clone(), read(&row, 0))))
        });
        let rows = futures::future::join_all(queries).await;
        rows.into_iter().filter_map(Result::transpose).collect()
    }
}

/// Reads a session from `row`, whose query columns start at `first`.
fn read(row: &PgRow, first: usize) -> Found {
    let user_id = row.try_get::<String, _>(first).map_err(|e| e.to_string());
    let expires_at = (row.len() > first + 1)
        .then(|| row.try_get::<Option<DateTime<Utc>>, _>(first + 1).ok().flatten())
        .flatten();
    Found { user_id, expires_at }
}

/// Whether PostgreSQL refused the batched statement itself (rather than failing to run it):
/// a syntax or access-rule error (class 42) or a feature it does not support (0A).
fn cannot_batch(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(error) => {
            error.code().is_some_and(|code| code.starts_with("42") || code.starts_with("0A"))
        }
        _ => false,
    }
}

/// `query` (one token as `$1`) as one statement for a text array of tokens as `$1`: every `$1`
/// (not `$10` and beyond) becomes the token of the current row of the array.
fn batched(query: &str) -> String {
    let query = query.trim().trim_end_matches(';');
    let mut per_token = String::with_capacity(query.len() + 64);
    let mut rest = query;
    while let Some(at) = rest.find("$1") {
        let after = &rest[at + 2..];
        per_token.push_str(&rest[..at]);
        if after.starts_with(|c: char| c.is_ascii_digit()) {
            per_token.push_str("$1");
        } else {
            per_token.push_str("switchboard_lookup.token");
        }
        rest = after;
    }
    per_token.push_str(rest);
    format!(
        "SELECT switchboard_lookup.token, found.* FROM unnest($1::text[]) AS switchboard_lookup(token) \
         CROSS JOIN LATERAL ({per_token}) AS found"
    )
}

#[cfg(test)]
mod tests {
    use super::batched;

    #[test]
    fn the_configured_query_runs_per_token_of_the_array() {
        assert_eq!(
            batched("SELECT user_id, expires_at FROM sessions WHERE token = $1 AND expires_at > now();\n"),
            "SELECT switchboard_lookup.token, found.* FROM unnest($1::text[]) AS switchboard_lookup(token) \
             CROSS JOIN LATERAL (SELECT user_id, expires_at FROM sessions WHERE token = \
             switchboard_lookup.token AND expires_at > now()) AS found"
        );
        // `$1` used twice, and a `$10` that is not the token, at the very end.
        assert!(batched("SELECT f($1, $1::text) WHERE $10").contains(
            "(SELECT f(switchboard_lookup.token, switchboard_lookup.token::text) WHERE $10) AS found"
        ));
    }
}
