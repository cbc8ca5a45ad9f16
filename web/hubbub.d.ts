// TypeScript declarations of hubbub.js (docs/browser.md).

export type State = "connecting" | "connected" | "disconnected";

/** A stream position: the offset of a publication within its channel's epoch. */
export interface StreamPosition {
  offset: number;
  epoch: string;
}

export interface Publication<T = unknown> {
  channel: string;
  data: T;
  /** Channels with history only. */
  offset: number | null;
  epoch: string | null;
  /** Who published (absent for publications made through the server API). */
  sender: { client: string; user: string } | null;
}

export interface PresenceEvent {
  client: string;
  user: string;
}

export interface SubscribedEvent {
  /** `recovered` of the subscribe reply: false means publications were missed (reload). */
  recovered: boolean | null;
  /** True after a reconnect. */
  resubscribed: boolean;
  /** Publications recovered from history by this subscribe. */
  missed: number;
}

export interface ConnectInfo {
  client: string;
  node: string;
  ping: number;
  limits: Record<string, number>;
  [key: string]: unknown;
}

export interface ClientOptions {
  /** A JWT for `connect` (required when the server has anonymous = false). */
  token?: string | null;
  /** Gives a fresh token: before `exp` (see refreshAhead), after a 3005, and when the token is missing. */
  getToken?: (() => Promise<string>) | null;
  /** `client.name` in `connect` (default "hubbub-js"). */
  name?: string;
  version?: string | null;
  /** "json" (default) or "msgpack" (the vendored @msgpack/msgpack, loaded on first use). */
  encoding?: "json" | "msgpack";
  /** Reconnect when the server allows it (default true). */
  reconnect?: boolean;
  /** Bound on each command and connection attempt, ms (default 10000). */
  timeout?: number;
  /** Backoff base and cap, ms (defaults 100 and 10000); full jitter. */
  backoffBase?: number;
  backoffCap?: number;
  /** Refresh this many ms before `exp` (at most half the remaining life); 0: only on 3005. Default 30000. */
  refreshAhead?: number;
  /** A WebSocket class (default globalThis.WebSocket). */
  WebSocket?: typeof WebSocket;
  /** Your own msgpack codec instead of the vendored one. */
  msgpack?: { encode(value: unknown): Uint8Array; decode(data: Uint8Array): unknown } | null;
}

export interface HistoryResult<T = unknown> {
  publications: Publication<T>[];
  position: StreamPosition | null;
}

declare class Emitter<Events extends Record<string, unknown[]>> {
  on<K extends keyof Events>(event: K, fn: (...args: Events[K]) => void): this;
  off<K extends keyof Events>(event: K, fn: (...args: Events[K]) => void): this;
}

export type SubscriptionEvents = {
  publication: [Publication];
  join: [PresenceEvent];
  leave: [PresenceEvent];
  lag: [{ dropped: number }];
  subscribed: [SubscribedEvent];
  reset: [];
  unsubscribed: [Error | null | undefined];
};

export class Subscription extends Emitter<SubscriptionEvents> {
  readonly client: Client;
  readonly channel: string;
  recover: boolean;
  /** The last position seen; null on channels without history. */
  position: StreamPosition | null;
  recovered: boolean | null;
  lagged: number;
  state: "subscribing" | "subscribed" | "closed";
  /** Resolves when the server confirmed the first subscribe; rejects with its ReplyError. */
  readonly ready: Promise<Subscription>;
  unsubscribe(): Promise<void>;
}

export type ClientEvents = {
  state: [State];
  connected: [ConnectInfo];
  disconnected: [Disconnected];
  error: [ReplyError];
};

export class Client extends Emitter<ClientEvents> {
  constructor(url: string | string[], options?: ClientOptions);
  readonly urls: string[];
  readonly state: State;
  readonly connected: boolean;
  readonly clientId: string | null;
  token: string | null;
  info: ConnectInfo | Record<string, never>;
  lastDisconnect: Disconnected | null;
  reconnects: number;
  readonly subscriptions: Map<string, Subscription>;
  connect(): Promise<ConnectInfo>;
  close(): void;
  subscribe(channel: string, options?: { recover?: boolean; since?: StreamPosition | null }): Subscription;
  unsubscribe(channel: string): Promise<void>;
  /** Resolves with the offset on channels with history, else null. */
  publish(channel: string, data: unknown): Promise<number | null>;
  presence(channel: string): Promise<Record<string, { user: string; info: unknown }>>;
  history(channel: string, options?: { since?: StreamPosition | null; limit?: number | null }): Promise<HistoryResult>;
  ping(): Promise<void>;
  refresh(token: string): Promise<number | null>;
}

export class ReplyError extends Error {
  code: number;
  message: string;
  /** ms to wait (429). */
  retryAfter: number | null;
  data: Record<string, unknown>;
}

export class ReplyTimeout extends Error {}

export class Disconnected extends Error {
  code: number | null;
  reason: string;
  reconnect: boolean;
  after: number | null;
}

export function backoffDelay(attempt: number, base?: number, cap?: number, rand?: () => number): number;
export function tokenExpiry(token: string): number | null;
