-- Switchboard's initial schema.
--
-- Ownership (contract section 1): each worker owns its tables and no other process writes
-- them. There are no foreign keys across owners, so each worker's tables can move to their
-- own database later without untangling constraints.
--   sessions                      the host application's (the edge only reads it)
--   conversations, conversation_participants, messages, read_receipts
--                                 switchboard-messages
--   last_seen                     switchboard-presence
--   matches, notifications        switchboard-notifier
--
-- User ids and match ids are the host application's opaque strings (1 to 128 characters);
-- conversation, message and notification ids are UUIDv7 minted by the workers, so ordering by
-- id is ordering by creation time.

-- The default session table, for installs whose web application has none. An operator whose
-- app keeps sessions elsewhere points AUTH_SESSION_QUERY at that table instead.
CREATE TABLE IF NOT EXISTS sessions (
    token       text        PRIMARY KEY,          -- the lookup the edge makes at every connect
    user_id     text        NOT NULL,
    expires_at  timestamptz NOT NULL
);
-- For the host application's "log out everywhere" (delete by user); the edge never needs it.
CREATE INDEX IF NOT EXISTS sessions_user_id ON sessions (user_id);

-- A conversation between two or more users.
CREATE TABLE conversations (
    id          uuid        PRIMARY KEY,
    created_at  timestamptz NOT NULL DEFAULT now(),
    -- The seq of the newest message. A send increments it with UPDATE ... RETURNING inside the
    -- transaction that inserts the message: the row lock serializes writers of one
    -- conversation (and only of that one), so seq is gapless and never repeats, whichever
    -- worker copy commits.
    last_seq    bigint      NOT NULL DEFAULT 0,
    -- The match that created this conversation, if any: one conversation per match, however
    -- often the match is replayed.
    match_id    text        UNIQUE,
    -- Set by an unmatch: the conversation is closed for good and every chat event on it is
    -- answered forbidden.
    closed_at   timestamptz
);

CREATE TABLE conversation_participants (
    conversation_id uuid        NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    user_id         text        NOT NULL,
    joined_at       timestamptz NOT NULL DEFAULT now(),
    -- The membership check of every chat event is a lookup on this key.
    PRIMARY KEY (conversation_id, user_id)
);
-- A user's conversations, and their contacts (users sharing an open conversation), which
-- presence asks for on every online/offline change.
CREATE INDEX conversation_participants_user ON conversation_participants (user_id, conversation_id);

CREATE TABLE messages (
    id                uuid        PRIMARY KEY,
    conversation_id   uuid        NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    seq               bigint      NOT NULL CHECK (seq > 0),
    sender_id         text        NOT NULL,
    content           text        NOT NULL,
    -- The sender's retry key: the same (sender, clientMessageId) is one message.
    client_message_id text,
    -- The id of the bus command that stored it: a broker redelivery of that command (the
    -- worker died after committing, before acknowledging) finds this row instead of storing
    -- the message twice, also when the client gave no clientMessageId.
    command_id        uuid        NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    -- Gapless order per conversation; also the index messages:sync pages through
    -- (conversation_id = $1 AND seq > $2 ORDER BY seq).
    CONSTRAINT messages_conversation_seq UNIQUE (conversation_id, seq)
);
-- Idempotent sends: a client's retry with the same clientMessageId finds the original.
CREATE UNIQUE INDEX messages_sender_client_id ON messages (sender_id, client_message_id)
    WHERE client_message_id IS NOT NULL;
-- Idempotent commands: a broker redelivery finds what the first delivery stored.
CREATE UNIQUE INDEX messages_command_id ON messages (command_id);

-- How far each participant has read: one row per (conversation, user), moved forward only.
CREATE TABLE read_receipts (
    conversation_id uuid        NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    user_id         text        NOT NULL,
    message_id      uuid        NOT NULL,
    seq             bigint      NOT NULL,
    read_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (conversation_id, user_id)
);

-- When each user was last seen online; survives presence worker restarts.
CREATE TABLE last_seen (
    user_id      text        PRIMARY KEY,
    last_seen_at timestamptz NOT NULL
);

-- Matches, idempotent by the host application's match id.
CREATE TABLE matches (
    match_id        text        PRIMARY KEY,
    -- The two users, stored in a fixed order (user_a < user_b) so a pair reads the same
    -- whichever way round the match arrived.
    user_a          text        NOT NULL,
    user_b          text        NOT NULL CHECK (user_a < user_b),
    conversation_id uuid,
    created_at      timestamptz NOT NULL,
        -- When both users were sent match:new and their notifications: a replayed match.created
    -- finds it set and sends nothing again.
    announced_at    timestamptz,
    -- Set by an unmatch; the row stays so a replayed match.created cannot resurrect it.
    removed_at      timestamptz
);

-- Each user's notification inbox: stored first, then delivered (at least once).
CREATE TABLE notifications (
    id           uuid        PRIMARY KEY,
    user_id      text        NOT NULL,
    type         text        NOT NULL,
    title        text        NOT NULL,
    message      text        NOT NULL,
    data         jsonb,
    created_at   timestamptz NOT NULL DEFAULT now(),
    read_at      timestamptz,
    -- When a socket of the user received it; null means it waits for their next connect.
    delivered_at timestamptz,
    -- For a match notification, its match: at most one per (match, user), so a replayed match
    -- stores nothing new.
    match_id     text,
    CONSTRAINT notifications_one_per_match UNIQUE (match_id, user_id)
);
-- notifications:list, newest first (and unreadOnly filters this small range further).
CREATE INDEX notifications_user_newest ON notifications (user_id, created_at DESC);
-- The undelivered ones, pushed when the user next connects; small, so a partial index.
CREATE INDEX notifications_undelivered ON notifications (user_id) WHERE delivered_at IS NULL;
