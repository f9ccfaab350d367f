/**
 * `--server-status` and `--view-queue`: one request, one validated response
 * (docs/PROTOCOL.md §4). The same in every protocol version.
 *
 * @module
 */
import type { Channel } from "../wire/channel.ts";
import { ProtocolError } from "../errors.ts";
import { type MessageOf, parseServerMessage, type ServerMessage } from "../wire/protocol.ts";

/** The server's `server_status_response`. */
export type ServerStatus = MessageOf<ServerMessage, "server_status_response">;
/** The server's `queue_details_response`. */
export type QueueDetails = MessageOf<ServerMessage, "queue_details_response">;

async function ask<T extends ServerMessage["type"]>(
  channel: Channel,
  request: "get_server_status" | "get_queue_details",
  expected: T,
): Promise<MessageOf<ServerMessage, T>> {
  await channel.send({ type: request });
  const incoming = await channel.receive();
  if (incoming.type !== "message") {
    throw new ProtocolError(`expected ${expected}, got ${incoming.type}`);
  }
  const message = parseServerMessage(incoming.message, channel.version);
  if (message.type !== expected) {
    throw new ProtocolError(`expected ${expected}, got ${message.type}`);
  }
  return message as MessageOf<ServerMessage, T>;
}

/** Ask for the server's status. */
export function getServerStatus(channel: Channel): Promise<ServerStatus> {
  return ask(channel, "get_server_status", "server_status_response");
}

/** Ask for the running and queued jobs. */
export function getQueueDetails(channel: Channel): Promise<QueueDetails> {
  return ask(channel, "get_queue_details", "queue_details_response");
}
