// @switchboard/kit: the client library and the contract's types. React bindings are in
// "@switchboard/kit/react" and the server-side emitter in "@switchboard/kit/server", so a
// browser bundle without React pulls in neither.

export * from "./generated/contract.js";
export {
  connect,
  newClientMessageId,
  SwitchboardClient,
  type ClientEventName,
  type ConnectOptions,
  type Reply,
  type SendResult,
  type ServerEventName,
  type SwitchboardSocket,
} from "./client.js";
