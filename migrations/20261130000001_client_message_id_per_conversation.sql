-- A clientMessageId is the sender's retry key within one conversation (contract section 4,
-- changed by issue 13): the same id reused in another conversation is a new message there,
-- not the other conversation's message. The old index made the key (sender, id) across all
-- conversations, so a reuse elsewhere answered with a message from a conversation the
-- request did not name.
--
-- Every pair of rows that is unique on (sender_id, client_message_id) is unique on the wider
-- key too, so building the new index cannot fail on existing data. It is built before the
-- old one is dropped, inside the migration's transaction, so there is no moment without one.
CREATE UNIQUE INDEX messages_conversation_sender_client_id
    ON messages (conversation_id, sender_id, client_message_id)
    WHERE client_message_id IS NOT NULL;
DROP INDEX messages_sender_client_id;
