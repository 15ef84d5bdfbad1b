//! Requests any copy answers (competing consumers, no ordering needed): membership for the
//! edges' `conversation:join`, `messages:sync` pages, and conversation creation.

use std::sync::{
    Arc,
    atomic::{AtomicBool, AtomicUsize, Ordering},
};

use switchboard::{
    Bus,
    bus::{ConsumeOptions, Durability, queues},
    contract::{
        AckError, ConversationId,
        bus::{
            CloseConversation, Contacts, ContactsQuery, ConversationClosed, ConversationCreated,
            ConversationOpened, ConversationSummary, CreateConversation, Membership, MembershipQuery,
            SyncQuery, UserConversations, UserConversationsQuery,
        },
        client::{Empty, MessagesPage},
    },
    db::Database,
};
use uuid::Uuid;

use crate::batch::StoredRow;

pub fn serve(bus: &Bus, database: &Database) -> Serving {
    let mut serving = Serving::default();
    let db = database.clone();
    bus.serve(queues::membership(), serving.options(16), move |query: MembershipQuery| {
        let db = db.clone();
        async move {
            Ok(Membership { member: is_member(&db, query.conversation_id, query.user_id.as_str()).await? })
        }
    });
    let db = database.clone();
    bus.serve(queues::contacts(), serving.options(16), move |query| {
        let db = db.clone();
        async move { contacts(&db, query).await }
    });
    let (db, publisher) = (database.clone(), bus.clone());
    bus.serve(queues::close_conversation(), serving.options(4), move |request| {
        let (db, bus) = (db.clone(), publisher.clone());
        async move { close(&db, &bus, request).await }
    });
    let db = database.clone();
    bus.serve(queues::sync(), serving.options(16), move |query| {
        let db = db.clone();
        async move { sync(&db, query).await }
    });
    let db = database.clone();
    bus.serve(queues::user_conversations(), serving.options(8), move |query| {
        let db = db.clone();
        async move { user_conversations(&db, query).await }
    });
    let (db, publisher) = (database.clone(), bus.clone());
    bus.serve(queues::create_conversation(), serving.options(8), move |request| {
        let (db, bus) = (db.clone(), publisher.clone());
        async move { create(&db, &bus, request).await }
    });
    serving
}

/// Whether every request queue has had a consumer. Until then a request may come back
/// unroutable and be answered `unavailable`, so the worker does not call itself ready.
#[derive(Clone, Default)]
pub struct Serving {
    /// Consumers that have started at least once.
    started: Arc<AtomicUsize>,
    /// Consumers set up by [`serve`].
    consumers: usize,
}

impl Serving {
    fn options(&mut self, concurrency: usize) -> ConsumeOptions {
        self.consumers += 1;
        let started = self.started.clone();
        // A consumer restarts after a channel loss; only its first start counts.
        let first = AtomicBool::new(true);
        ConsumeOptions {
            on_start: Some(Arc::new(move || {
                if first.swap(false, Ordering::Relaxed) {
                    started.fetch_add(1, Ordering::Relaxed);
                }
            })),
            ..ConsumeOptions::concurrent(concurrency)
        }
    }

    pub fn all_started(&self) -> bool {
        self.started.load(Ordering::Relaxed) == self.consumers
    }
}

fn unavailable(error: sqlx::Error) -> AckError {
    tracing::warn!(%error, "a query failed");
    AckError::unavailable()
}

/// A participant of an open conversation. An unknown conversation is simply "no".
pub async fn is_member(db: &Database, conversation: ConversationId, user: &str) -> Result<bool, AckError> {
    let (member,): (bool,) = sqlx::query_as(
        "SELECT EXISTS (SELECT 1 FROM conversation_participants p JOIN conversations c ON c.id = p.conversation_id \
         WHERE p.conversation_id = $1 AND p.user_id = $2 AND c.closed_at IS NULL)",
    )
    .bind(conversation.0)
    .bind(user)
    .fetch_one(db.pool())
    .await
    .map_err(unavailable)?;
    Ok(member)
}

/// Whether the conversation was ever created (open or closed).
async fn exists(db: &Database, conversation: ConversationId) -> Result<bool, AckError> {
    let (exists,): (bool,) = sqlx::query_as("SELECT EXISTS (SELECT 1 FROM conversations WHERE id = $1)")
        .bind(conversation.0)
        .fetch_one(db.pool())
        .await
        .map_err(unavailable)?;
    Ok(exists)
}

/// Closes a conversation for good (an unmatch) and tells every edge, which take their sockets
/// out of its room. Asking again is harmless: the edges hear it again.
#[tracing::instrument(name = "close conversation", skip_all, fields(conversation = %request.conversation_id))]
async fn close(db: &Database, bus: &Bus, request: CloseConversation) -> Result<Empty, AckError> {
    let participants: Vec<(String,)> = sqlx::query_as(
        "WITH closed AS (UPDATE conversations SET closed_at = coalesce(closed_at, now()) WHERE id = $1 RETURNING id) \
         SELECT p.user_id FROM conversation_participants p JOIN closed c ON c.id = p.conversation_id",
    )
    .bind(request.conversation_id.0)
    .fetch_all(db.pool())
    .await
    .map_err(unavailable)?;
    let closed = ConversationClosed {
        conversation_id: request.conversation_id,
        participants: participants.into_iter().filter_map(|(u,)| u.parse().ok()).collect(),
    };
    bus.publish(&closed, Durability::Confirmed).await.map_err(|error| {
        tracing::warn!(%error, "could not announce a closed conversation");
        AckError::unavailable()
    })?;
    Ok(Empty {})
}

/// Everyone who shares an open conversation with the user.
#[tracing::instrument(name = "contacts", skip_all, fields(user = %query.user_id))]
async fn contacts(db: &Database, query: ContactsQuery) -> Result<Contacts, AckError> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT DISTINCT other.user_id FROM conversation_participants mine \
         JOIN conversations c ON c.id = mine.conversation_id AND c.closed_at IS NULL \
         JOIN conversation_participants other ON other.conversation_id = mine.conversation_id \
         WHERE mine.user_id = $1 AND other.user_id <> $1",
    )
    // Planned with the actual user every time: a join whose best plan depends on the tables'
    // size (see `switchboard::db` on generic plans).
    .persistent(false)
    .bind(query.user_id.as_str())
    .fetch_all(db.pool())
    .await
    .map_err(unavailable)?;
    Ok(Contacts { user_ids: rows.into_iter().filter_map(|(u,)| u.parse().ok()).collect() })
}

/// A page of a conversation's messages: for a participant of the open conversation, or for a
/// backend (no `user_id`), of any conversation that exists.
#[tracing::instrument(name = "messages:sync", skip_all, fields(conversation = %query.conversation_id, user = ?query.user_id))]
async fn sync(db: &Database, query: SyncQuery) -> Result<MessagesPage, AckError> {
    match &query.user_id {
        Some(user) if !is_member(db, query.conversation_id, user.as_str()).await? => {
            return Err(AckError::forbidden());
        }
        Some(_) => {}
        None if !exists(db, query.conversation_id).await? => {
            return Err(AckError::not_found("no such conversation"));
        }
        None => {}
    }
    let limit = i64::from(query.limit.clamp(1, 200));
    let after = i64::try_from(query.after_seq).unwrap_or(i64::MAX);
    // One row more than the page tells whether there is more.
    let rows: Vec<StoredRow> = sqlx::query_as(
        "SELECT id, conversation_id, seq, sender_id, content, client_message_id, created_at \
         FROM messages WHERE conversation_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
    )
    // A range whose best plan depends on the table's size: planned with the actual values.
    .persistent(false)
    .bind(query.conversation_id.0)
    .bind(after)
    .bind(limit + 1)
    .fetch_all(db.pool())
    .await
    .map_err(unavailable)?;
    let has_more = rows.len() as i64 > limit;
    let messages = rows.into_iter().take(limit as usize).map(StoredRow::into_message).collect();
    Ok(MessagesPage { messages, has_more })
}

/// A row of [`user_conversations`]'s query.
#[derive(sqlx::FromRow)]
struct SummaryRow {
    id: Uuid,
    participants: Vec<String>,
    match_id: Option<String>,
    created_at: chrono::DateTime<chrono::Utc>,
    closed_at: Option<chrono::DateTime<chrono::Utc>>,
    last_seq: i64,
}

/// Every conversation the user takes part in, open or closed, newest first (ids are UUIDv7).
async fn user_conversations(
    db: &Database,
    query: UserConversationsQuery,
) -> Result<UserConversations, AckError> {
    let rows: Vec<SummaryRow> = sqlx::query_as(
        "SELECT c.id, c.match_id, c.created_at, c.closed_at, c.last_seq, \
           array(SELECT p.user_id FROM conversation_participants p WHERE p.conversation_id = c.id \
                 ORDER BY p.user_id) AS participants \
         FROM conversation_participants mine JOIN conversations c ON c.id = mine.conversation_id \
         WHERE mine.user_id = $1 ORDER BY c.id DESC",
    )
    .bind(query.user_id.as_str())
    .fetch_all(db.pool())
    .await
    .map_err(unavailable)?;
    let conversations = rows
        .into_iter()
        .map(|row| ConversationSummary {
            conversation_id: ConversationId(row.id),
            // Stored ids were valid ids when they were stored.
            participants: row.participants.into_iter().filter_map(|u| u.parse().ok()).collect(),
            match_id: row.match_id.and_then(|m| m.parse().ok()),
            created_at: row.created_at,
            closed_at: row.closed_at,
            last_seq: row.last_seq,
        })
        .collect();
    Ok(UserConversations { conversations })
}

/// Stores a conversation, then tells presence (`conversation.opened`), which introduces the
/// participants who are online to each other. Only a creation that stored something is
/// announced: a match's conversation is asked for twice (by the ingress, which answers with
/// its id, and by the notifier), and its users would otherwise be introduced twice. Losing an
/// announcement (a failed publish, or a crash between the commit and the publish) is a
/// presence event not shown (contacts can still ask with `presence:query`), not a reason to
/// fail a conversation that is stored, so a failed publish is only logged.
#[tracing::instrument(name = "create conversation", skip_all, fields(match_id = ?request.match_id))]
async fn create(
    db: &Database,
    bus: &Bus,
    request: CreateConversation,
) -> Result<ConversationCreated, AckError> {
    request.check().map_err(AckError::invalid)?;
    let mut tx = db.pool().begin().await.map_err(unavailable)?;
    let id = ConversationId::new();
    // A match's conversation is made once, however often the match is replayed. A concurrent
    // insert of the same match makes ours do nothing; the row is then read in a statement of
    // its own, whose snapshot sees the other transaction's commit.
    let inserted: Option<(Uuid,)> = sqlx::query_as(
        "INSERT INTO conversations (id, match_id) VALUES ($1, $2) ON CONFLICT (match_id) DO NOTHING RETURNING id",
    )
    .bind(id.0)
    .bind(request.match_id.as_ref().map(|m| m.as_str()))
    .fetch_optional(&mut *tx)
    .await
    .map_err(unavailable)?;
    let mut stored = inserted.is_some();
    let (id,) = match inserted {
        Some(row) => row,
        None => {
            let (id,): (Uuid,) = sqlx::query_as("SELECT id FROM conversations WHERE match_id = $1")
                .bind(request.match_id.as_ref().map(|m| m.as_str()))
                .fetch_one(&mut *tx)
                .await
                .map_err(unavailable)?;
            // The match's conversation is between the match's two users. The same `matchId`
            // naming other users is a mistake of the caller's, refused here rather than let
            // it add a stranger to that conversation.
            let existing: Vec<String> = sqlx::query_scalar(
                "SELECT user_id FROM conversation_participants WHERE conversation_id = $1 ORDER BY user_id",
            )
            .bind(id)
            .fetch_all(&mut *tx)
            .await
            .map_err(unavailable)?;
            let mut asked: Vec<String> = request.participants.iter().map(|u| u.to_string()).collect();
            asked.sort();
            if existing != asked {
                return Err(AckError::invalid("matchId already names a match between other users"));
            }
            (id,)
        }
    };
    let joined = sqlx::query(
        "INSERT INTO conversation_participants (conversation_id, user_id) SELECT $1, u FROM UNNEST($2::text[]) AS u \
         ON CONFLICT DO NOTHING",
    )
    .bind(id)
    .bind(request.participants.iter().map(|u| u.to_string()).collect::<Vec<_>>())
    .execute(&mut *tx)
    .await
    .map_err(unavailable)?;
    stored |= joined.rows_affected() > 0;
    tx.commit().await.map_err(unavailable)?;
    let conversation_id = ConversationId(id);
    if !stored {
        return Ok(ConversationCreated { conversation_id });
    }
    let opened = ConversationOpened { conversation_id, participants: request.participants };
    if let Err(error) = bus.publish(&opened, Durability::Confirmed).await {
        tracing::warn!(%error, "could not announce a new conversation to presence");
    }
    Ok(ConversationCreated { conversation_id })
}
