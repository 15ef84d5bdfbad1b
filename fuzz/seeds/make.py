#!/usr/bin/env python3
"""Writes the seed inputs of the fuzz targets (fuzz/seeds/<target>/): one valid input per type,
in each target's input layout (a selector byte, then the JSON). Run it again after adding a
type; libFuzzer starts from these and finds the rest. The order of the bus kinds is the order
of ENVELOPES and REPLIES in fuzz_targets/bus_envelopes.rs."""
import json, os, shutil

HERE = os.path.dirname(os.path.abspath(__file__))
U = "01890000-0000-7000-8000-000000000001"
T = "2026-01-01T00:00:00Z"

def write(target, name, selector, body):
    os.makedirs(os.path.join(HERE, target), exist_ok=True)
    text = body if isinstance(body, str) else json.dumps(body, ensure_ascii=False, separators=(",", ":"))
    with open(os.path.join(HERE, target, name), "wb") as f:
        f.write(bytes([selector]) + text.encode())

for target in ("client_payloads", "ingress_bodies", "bus_envelopes"):
    shutil.rmtree(os.path.join(HERE, target), ignore_errors=True)

client = [
    ("message_send", {"conversationId": U, "content": " hi \u2066\u05e9\u2069\n", "clientMessageId": "c-1"}),
    ("message_read", {"conversationId": U, "messageId": U}),
    ("conversation_ref", {"conversationId": U}),
    ("messages_sync", {"conversationId": U, "afterSeq": 0, "limit": 50}),
    ("presence_query", {"userIds": ["alice", "bob"]}),
    ("notifications_list", {"unreadOnly": True, "limit": 10}),
    ("notification_read", {"id": U}),
]
for i, (name, body) in enumerate(client):
    write("client_payloads", name, i, body)

ingress = [
    ("emit_user", 0, {"userId": "alice", "event": "hello", "data": {"n": 1, "f": 1.5, "s": ["x"]}}),
    ("emit_room", 0, {"room": "conversation:" + U, "event": "x", "data": None}),
    ("conversations", 1, {"participants": ["alice", "bob"]}),
    ("matches", 2, {"matchId": "m-1", "userIds": ["alice", "bob"], "createdAt": T}),
    ("notifications", 3, {"userId": "bob", "type": "system", "title": "Hi", "message": "Welcome", "data": {"k": ["v", 1]}}),
]
for name, selector, body in ingress:
    write("ingress_bodies", name, selector, body)

message_new = {"id": U, "conversationId": U, "senderId": "a", "content": "hi", "seq": 1, "createdAt": T, "clientMessageId": "c"}
notification_new = {"id": U, "type": "match", "title": "t", "message": "m", "userId": "a", "timestamp": T, "data": {"k": 1}, "readAt": T}
kinds = [
    ("edge.deliver", {"rooms": ["user:alice", "user:bob"], "event": "hello", "data": {"n": 1}, "exceptSocket": "s1"}),
    ("edge.deliver.batch", {"items": [{"rooms": ["user:alice"], "event": "message:new", "data": message_new, "exceptSocket": "s1"},
                                      {"rooms": ["user:bob"], "event": "message:read", "data": {"n": 1}}]}),
    ("conversation.membership.query", {"conversationId": U, "userId": "alice"}),
    ("conversation.membership", {"member": True}),
    ("edge.stopping", {"edgeId": U, "users": ["alice"]}),
    ("message.send", {"conversationId": U, "senderId": "a", "senderSocket": "s", "content": "hi", "clientMessageId": "c1", "expiresAt": T}),
    ("message.sent", {"messageId": U, "seq": 1, "createdAt": T}),
    ("message.read", {"conversationId": U, "messageId": U, "userId": "a", "readerSocket": "s", "expiresAt": T}),
    ("ok", {}),
    ("messages.sync.query", {"conversationId": U, "userId": "a", "afterSeq": 0, "limit": 50}),
    ("messages.page", {"messages": [message_new], "hasMore": False}),
    ("conversation.create", {"participants": ["a", "b"], "matchId": "m"}),
    ("conversation.created", {"conversationId": U}),
    ("conversation.closed", {"conversationId": U, "participants": ["a", "b"]}),
    ("presence.change", {"edgeId": U, "userId": "a", "online": True, "at": T}),
    ("presence.changes", {"changes": [{"edgeId": U, "userId": "a", "online": True, "at": T},
                                      {"edgeId": U, "userId": "b", "online": False, "at": T}]}),
    ("edge.report", {"edgeId": U, "users": ["a"], "intervalMs": 5000}),
    ("conversation.contacts.query", {"userIds": ["a", "c"]}),
    ("conversation.contacts", {"contacts": {"a": ["b"], "c": []}}),
    ("presence.query", {"userId": "a", "userIds": ["b"]}),
    ("presence.reply", {"users": {"b": {"online": False, "lastSeenAt": T}}}),
    ("match.created", {"matchId": "m", "userIds": ["a", "b"], "createdAt": T}),
    ("match.remove", {"matchId": "m"}),
    ("notification.create", {"id": U, "userId": "a", "type": "system", "title": "Hi", "message": "Welcome", "data": {"k": ["v", 1]}}),
    ("conversation.close", {"conversationId": U}),
    ("notifications.query", {"userId": "a", "unreadOnly": False, "limit": 50}),
    ("notifications.page", {"notifications": [notification_new]}),
    ("notification.read", {"userId": "a", "id": U}),
    ("rpc.replies", {"replies": [{"correlationId": "c1", "reply": {"ok": {"messageId": U, "seq": 1, "createdAt": T}}},
                                 {"correlationId": "c2", "reply": {"error": {"code": "forbidden", "message": "not allowed"}}}]}),
    ("rpc.requests", {"requests": [
        {"id": U, "correlationId": "c1", "kind": "message.send",
         "data": {"conversationId": U, "senderId": "a", "senderSocket": "s", "content": "hi", "clientMessageId": "c1", "expiresAt": T}},
        {"id": U, "correlationId": "c2", "kind": "message.read",
         "data": {"conversationId": U, "messageId": U, "userId": "a", "readerSocket": "s", "expiresAt": T}}]}),
    ("conversation.opened", {"conversationId": U, "participants": ["a", "b"]}),
    ("notification.flush", {"userId": "a"}),
    ("notification.flushes", {"userIds": ["a", "b"]}),
    ("notification.delivered", {"userId": "a", "id": U}),
    ("user.disconnect", {"userId": "a", "revokeSessions": True}),
    ("conversations.query", {"userId": "a"}),
    ("conversations.list", {"conversations": [{"conversationId": U, "participants": ["a", "b"], "matchId": "m",
                                               "createdAt": T, "closedAt": T, "lastSeq": 3}]}),
    ("domain.message.stored", message_new),
    ("domain.message.read", {"conversationId": U, "messageId": U, "userId": "b", "readAt": T}),
    ("domain.user.online", {"userId": "a", "at": T}),
    ("domain.user.offline", {"userId": "a", "lastSeenAt": T}),
    ("domain.match.created", {"matchId": "m", "conversationId": U, "userIds": ["a", "b"], "createdAt": T}),
    ("domain.match.removed", {"matchId": "m", "conversationId": U}),
    ("domain.notification.delivered", {"notificationId": U, "userId": "a", "deliveredAt": T}),
    ("domain.notification.read", {"notificationId": U, "userId": "a", "readAt": T}),
]
bodies = dict(kinds)
answers = ["conversation.membership", "message.sent", "ok", "messages.page", "conversation.created",
           "conversation.contacts", "presence.reply", "notifications.page", "conversations.list"]

def envelope(kind, data):
    return {"v": 1, "kind": kind, "id": U, "sentAt": T, "data": data}

decoders = [(kind, body) for kind, body in kinds] + [(kind, {"ok": bodies[kind]}) for kind in answers]
for i, (kind, body) in enumerate(decoders):
    prefix = "reply_" if i >= len(kinds) else ""
    name = prefix + kind.replace(".", "_")
    write("bus_envelopes", name, i, envelope(kind, body))
    write("bus_envelopes", name + "_body", i | 0x80, body)
refused = {"error": {"code": "invalid", "message": "malformed request"}}
write("bus_envelopes", "reply_refused", len(kinds), envelope("conversation.membership", refused))
