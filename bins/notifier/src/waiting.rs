//! Who has undelivered notifications, asked by many inbox flushes in one query.
//!
//! Every connect makes its edge ask for a flush, and most find nothing waiting. So a flush
//! first asks here, and only a user with something waiting has their inbox read page by page.
//!
//! What gathers: the users of every flush that asks while a query runs; they are answered
//! together by the next one (`user_id = ANY($1)`, on the partial index of undelivered
//! notifications). What bounds: one query at a time, at most [`MAX_BATCH`] users each. A lone
//! flush is asked at once, alone, so a quiet notifier adds no wait. One bad item: a user id is a
//! bound text parameter, so none can break the query for the others; a failed query (database
//! down) fails every flush of its batch, which is tried again in place.

use std::collections::{HashMap, HashSet};

use switchboard::{contract::UserId, db::Database};
use tokio::sync::{mpsc, oneshot};

use crate::Failure;

/// The most users one query asks about; more wait for the next query.
pub const MAX_BATCH: usize = 500;

type Answer = Result<bool, Failure>;

/// The way in: [`Waiting::any`]. The dispatcher ends with the last clone.
#[derive(Clone)]
pub struct Waiting {
    asks: mpsc::UnboundedSender<(UserId, oneshot::Sender<Answer>)>,
}

impl Waiting {
    pub fn start(database: Database) -> Self {
        let (asks, incoming) = mpsc::unbounded_channel();
        tokio::spawn(dispatch(database, incoming));
        Self { asks }
    }

    /// Whether `user` has at least one undelivered notification.
    pub async fn any(&self, user: &UserId) -> Answer {
        let (answer, answered) = oneshot::channel();
        self.asks
            .send((user.clone(), answer))
            .map_err(|_| Failure::Retry("the inbox check has stopped".to_owned()))?;
        answered.await.unwrap_or_else(|_| Err(Failure::Retry("the inbox check was dropped".to_owned())))
    }
}

async fn dispatch(
    database: Database,
    mut incoming: mpsc::UnboundedReceiver<(UserId, oneshot::Sender<Answer>)>,
) {
    while let Some((user, answer)) = incoming.recv().await {
        let mut batch: HashMap<UserId, Vec<oneshot::Sender<Answer>>> = HashMap::new();
        batch.entry(user).or_default().push(answer);
        while batch.len() < MAX_BATCH {
            let Ok((user, answer)) = incoming.try_recv() else { break };
            batch.entry(user).or_default().push(answer);
        }
        metrics::histogram!("notifier_inbox_check_batch_size").record(batch.len() as f64);
        let users: Vec<&str> = batch.keys().map(UserId::as_str).collect();
        let found: Result<Vec<String>, sqlx::Error> = sqlx::query_scalar(
            "SELECT DISTINCT user_id FROM notifications WHERE user_id = ANY($1) AND delivered_at IS NULL",
        )
        .bind(&users)
        .fetch_all(database.pool())
        .await;
        match found {
            Ok(found) => {
                let waiting: HashSet<String> = found.into_iter().collect();
                for (user, answers) in batch {
                    let any = waiting.contains(user.as_str());
                    answers.into_iter().for_each(|answer| drop(answer.send(Ok(any))));
                }
            }
            Err(error) => {
                let failure = Failure::from(error);
                for answer in batch.into_values().flatten() {
                    let _ = answer.send(Err(failure.clone()));
                }
            }
        }
    }
}
