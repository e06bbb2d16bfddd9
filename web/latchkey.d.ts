// Types of latchkey.js, the browser client of a latchkey service (served at /auth/client.d.ts).

/** Why the session ended: a revocation reason from the server or a definitive error code. */
export type SignedOutReason =
  | "logout"
  | "logout_all"
  | "reuse_detected"
  | "admin"
  | "user_disabled"
  | "upgraded"
  | "deleted"
  | "expired"
  | "token_reused"
  | "session_revoked"
  | "token_expired"
  | "invalid_token"
  | "token_mode_mismatch"
  | "bad_request"
  | (string & {});

export interface LatchkeyOptions {
  /** "stateful" (an HttpOnly cookie, the default) or "stateless" (tokens in memory). */
  mode?: "stateful" | "stateless";
  /** Where the service's /auth routes are; default: the directory this module was loaded from. */
  baseUrl?: string;
  /**
   * Share the session between the tabs of this origin: one tab refreshes at a time (Web
   * Locks), the new tokens go to the others (BroadcastChannel). Default true.
   */
  share?: boolean;
  /** Refresh before the access token (stateless) or the session (stateful) expires. Default true. */
  autoRefresh?: boolean;
  /** Refresh when this fraction of the lifetime is left (at least 0.5 s). Default 0.25. */
  refreshAhead?: number;
  /** A refresh another tab finished less than this many ms ago counts as one's own. Default 250. */
  coalesceMs?: number;
  /** Follow GET /auth/events to learn at once of a revocation. Default true. */
  events?: boolean;
  /** Longest wait between two retries of a failed refresh or stream (ms). Default 10000. */
  retryMaxMs?: number;
  /** Time allowed for one request (ms). Default 15000. */
  requestTimeoutMs?: number;
  /** Reconnect an event stream silent for this long (ms; the server sends keep-alives). Default 45000. */
  heartbeatMs?: number;
  /** Called once when the session ends, whatever ended it, with the reason. */
  onSignedOut?: (reason: SignedOutReason) => void;
  /** Called when this client becomes signed in (login, resume, another tab's login). */
  onSignedIn?: (sessionId: string) => void;
  /** Called for a non-transient, non-definitive failure of a refresh (e.g. origin_rejected). */
  onError?: (error: LatchkeyError) => void;
  /** Called for every event of the session's stream other than `revoked`. */
  onEvent?: (name: "expiring" | "refreshed" | string, data: Record<string, unknown>) => void;
}

/** A session as GET /auth/session and GET /auth/sessions describe it (no secret). */
export interface SessionInfo {
  session_id: string;
  kind: "stateful" | "stateless";
  owner_key: string;
  created_at: string;
  last_used_at: string;
  expires_at: string;
  absolute_expires_at: string;
  revoked_at: string | null;
  revoked_reason: string | null;
  state: "active" | "expired" | "revoked";
  user_agent: string | null;
  ip: string | null;
  /** In GET /auth/sessions: whether this is the caller's own session. */
  current?: boolean;
}

export interface LoginResult {
  session_id: string;
  expires_in: number;
  access_token?: string;
  refresh_token?: string;
  token_type?: "Bearer";
  refresh_expires_in?: number;
}

export interface Tokens {
  access_token: string;
  refresh_token: string;
  session_id: string;
  /** When the access token expires (ms since the epoch). */
  access_expires_at: number;
  lifetime_ms: number;
}

export declare class LatchkeyError extends Error {
  readonly status: number;
  /** The problem's code (e.g. "token_reused"), or "http_<status>". Status 0: no answer. */
  readonly code: string;
  readonly retryAfterMs?: number;
  /** Whether trying again with the same token may succeed (no answer, 429, 5xx). */
  readonly transient: boolean;
  /** Whether the answer ends the session (a 401 with a definitive code). */
  readonly definitive: boolean;
}

export declare class Latchkey {
  constructor(options?: LatchkeyOptions);
  readonly mode: "stateful" | "stateless";
  readonly base: string;
  readonly signedIn: boolean;
  readonly sessionId: string | null;
  /** Resumes the session this browser (or another tab) holds; null when there is none. */
  start(): Promise<SessionInfo | null>;
  login(credentials: { email: string; password: string }): Promise<LoginResult>;
  /** Signs this session out. */
  logout(): Promise<void>;
  /** Signs out every session of the account. */
  logoutEverywhere(): Promise<void>;
  /** Signs out every other session of the account; resolves to how many were revoked. */
  logoutOthers(): Promise<number>;
  session(): Promise<SessionInfo | null>;
  sessions(): Promise<SessionInfo[]>;
  /** Signs out one session of the account; false if it was not found (or not live). */
  revokeSession(id: string): Promise<boolean>;
  /** The access token (stateless mode), refreshed first when about to expire. */
  accessToken(): Promise<string | null>;
  /** fetch with the session's credentials; refreshes once on a 401 token_expired. */
  fetch(input: RequestInfo | URL, init?: RequestInit): Promise<Response>;
  /** Refreshes now (one tab at a time); true when still signed in afterwards. */
  refresh(options?: { force?: boolean }): Promise<boolean>;
  /** Stateless mode: the tokens held in memory, or null. */
  tokens(): Tokens | null;
  /** Stateless mode: takes tokens obtained elsewhere. */
  useTokens(tokens: Tokens): void;
  close(): void;
}

export default Latchkey;
