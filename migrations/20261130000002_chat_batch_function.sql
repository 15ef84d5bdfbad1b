-- One round trip per batch of chat commands (issue 14).
--
-- switchboard-messages used to run about six statements per batch (BEGIN, participants, the
-- earlier copies, the seq update, the insert, COMMIT), each a network round trip, and because
-- one of them could get a bad generic plan every connection re-planned every statement
-- (plan_cache_mode=force_custom_plan). This function does the whole batch in one call, so one
-- statement in its own transaction: plpgsql keeps each inner statement's plan, and every inner
-- statement is an equality lookup on a primary key or unique index, for which the generic plan
-- is the index scan whatever the table's size was when it was made.
--
-- Sends (the s_ arrays, in batch order), for each:
--   - not a participant of the open conversation: 'forbidden';
--   - s_look_up_command (a broker redelivery, or the second pass after a unique violation)
--     and a message with this command id exists: 'redelivered' with that message (the caller
--     fans it out again: the first delivery may have died before its fan-out);
--   - a client id, and this sender's message with it exists in this conversation (stored
--     earlier, or earlier in this very batch): 'existing' with that message;
--   - otherwise the conversation's last_seq is advanced by one and the message inserted:
--     'stored'. Seqs follow batch order, so the order the edges published.
-- Reads (the r_ arrays): 'forbidden' for a non-participant, 'not_found' for a message not in
-- that conversation, else 'read' after moving the reader's receipt forward (never back).
-- Then one 'participants' row per open conversation of the batch (the fan-out's addressees).
--
-- The conversations of the sends are locked first, in id order, so two transactions that
-- touch the same conversations (possible only while a shard moves between copies) wait for
-- each other instead of deadlocking. A unique violation (the other one stored one of these
-- commands first) aborts the call; the caller calls again with s_look_up_command all true.
CREATE FUNCTION switchboard_chat_batch(
    s_conversation     uuid[],
    s_sender           text[],
    s_content          text[],
    s_client_id        text[],
    s_command          uuid[],
    s_look_up_command  boolean[],
    s_message          uuid[],
    r_conversation     uuid[],
    r_user             text[],
    r_message          uuid[],
    at                 timestamptz
) RETURNS TABLE (
    part               text,
    idx                int,
    outcome            text,
    message_id         uuid,
    conversation_id    uuid,
    seq                bigint,
    sender_id          text,
    content            text,
    client_message_id  text,
    created_at         timestamptz,
    users              text[]
) LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    i        int;
    next_seq bigint;
    m        messages%ROWTYPE;
BEGIN
    PERFORM 1 FROM conversations c
        WHERE c.id = ANY (s_conversation) ORDER BY c.id FOR UPDATE;

    FOR i IN 1 .. coalesce(array_length(s_conversation, 1), 0) LOOP
        IF NOT EXISTS (
            SELECT 1 FROM conversation_participants p JOIN conversations c ON c.id = p.conversation_id
            WHERE p.conversation_id = s_conversation[i] AND p.user_id = s_sender[i] AND c.closed_at IS NULL
        ) THEN
            RETURN QUERY SELECT 'send', i, 'forbidden', NULL::uuid, NULL::uuid, NULL::bigint, NULL::text,
                NULL::text, NULL::text, NULL::timestamptz, NULL::text[];
            CONTINUE;
        END IF;
        IF s_look_up_command[i] THEN
            SELECT * INTO m FROM messages WHERE command_id = s_command[i];
            IF FOUND THEN
                RETURN QUERY SELECT 'send', i, 'redelivered', m.id, m.conversation_id, m.seq, m.sender_id,
                    m.content, m.client_message_id, m.created_at, NULL::text[];
                CONTINUE;
            END IF;
        END IF;
        IF s_client_id[i] IS NOT NULL THEN
            SELECT * INTO m FROM messages
                WHERE messages.conversation_id = s_conversation[i] AND messages.sender_id = s_sender[i]
                  AND messages.client_message_id = s_client_id[i];
            IF FOUND THEN
                RETURN QUERY SELECT 'send', i, 'existing', m.id, m.conversation_id, m.seq, m.sender_id,
                    m.content, m.client_message_id, m.created_at, NULL::text[];
                CONTINUE;
            END IF;
        END IF;
        UPDATE conversations c SET last_seq = c.last_seq + 1 WHERE c.id = s_conversation[i]
            RETURNING c.last_seq INTO next_seq;
        INSERT INTO messages (id, conversation_id, seq, sender_id, content, client_message_id, command_id, created_at)
            VALUES (s_message[i], s_conversation[i], next_seq, s_sender[i], s_content[i], s_client_id[i],
                    s_command[i], at);
        RETURN QUERY SELECT 'send', i, 'stored', s_message[i], s_conversation[i], next_seq, s_sender[i],
            s_content[i], s_client_id[i], at, NULL::text[];
    END LOOP;

    FOR i IN 1 .. coalesce(array_length(r_conversation, 1), 0) LOOP
        IF NOT EXISTS (
            SELECT 1 FROM conversation_participants p JOIN conversations c ON c.id = p.conversation_id
            WHERE p.conversation_id = r_conversation[i] AND p.user_id = r_user[i] AND c.closed_at IS NULL
        ) THEN
            RETURN QUERY SELECT 'read', i, 'forbidden', NULL::uuid, NULL::uuid, NULL::bigint, NULL::text,
                NULL::text, NULL::text, NULL::timestamptz, NULL::text[];
            CONTINUE;
        END IF;
        -- Messages stored earlier in this call are visible here.
        SELECT * INTO m FROM messages WHERE id = r_message[i];
        IF NOT FOUND OR m.conversation_id <> r_conversation[i] THEN
            RETURN QUERY SELECT 'read', i, 'not_found', NULL::uuid, NULL::uuid, NULL::bigint, NULL::text,
                NULL::text, NULL::text, NULL::timestamptz, NULL::text[];
            CONTINUE;
        END IF;
        INSERT INTO read_receipts AS rr (conversation_id, user_id, message_id, seq, read_at)
            VALUES (m.conversation_id, r_user[i], m.id, m.seq, at)
            ON CONFLICT ON CONSTRAINT read_receipts_pkey DO UPDATE
            SET message_id = EXCLUDED.message_id, seq = EXCLUDED.seq, read_at = EXCLUDED.read_at
            WHERE rr.seq < EXCLUDED.seq;
        RETURN QUERY SELECT 'read', i, 'read', m.id, m.conversation_id, m.seq, NULL::text, NULL::text,
            NULL::text, at, NULL::text[];
    END LOOP;

    RETURN QUERY
        SELECT 'participants', NULL::int, NULL::text, NULL::uuid, c.id, NULL::bigint, NULL::text, NULL::text,
            NULL::text, NULL::timestamptz, array_agg(p.user_id ORDER BY p.user_id)
        FROM conversations c JOIN conversation_participants p ON p.conversation_id = c.id
        WHERE c.closed_at IS NULL AND c.id = ANY (s_conversation || r_conversation)
        GROUP BY c.id;
END;
$$;
