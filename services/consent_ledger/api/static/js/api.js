// The API client: every request goes to this page's own origin with the
// signed-in token as "Authorization: Bearer". A 401 ends the session.

const TOKEN_KEY = "consent-ledger.token";
const PURPOSE_KEY = "consent-ledger.purpose";
const MAX_PURPOSE_CHARS = 1024; // what the API keeps of X-Purpose

// sessionStorage, not localStorage: the token leaves with the tab and is never
// shared with other tabs or kept on disk after the browser closes.
export const session = {
  get token() {
    return sessionStorage.getItem(TOKEN_KEY);
  },
  signIn(token) {
    sessionStorage.setItem(TOKEN_KEY, token);
  },
  signOut() {
    sessionStorage.removeItem(TOKEN_KEY);
    sessionStorage.removeItem(PURPOSE_KEY);
  },
  /** Why the reader looks (CONTRACT §7: the access log keeps the X-Purpose header). */
  get purpose() {
    return sessionStorage.getItem(PURPOSE_KEY) || "";
  },
  set purpose(text) {
    // A header holds printable ASCII only; anything else would make fetch throw.
    const clean = String(text).replace(/[^\x20-\x7e]/g, "?").trim().slice(0, MAX_PURPOSE_CHARS);
    if (clean) sessionStorage.setItem(PURPOSE_KEY, clean);
    else sessionStorage.removeItem(PURPOSE_KEY);
  },
};

let onUnauthorized = () => {};

/** What to do when the API answers 401 (the app signs out and says why). */
export function whenUnauthorized(handler) {
  onUnauthorized = handler;
}

export class ApiError extends Error {
  constructor(status, body, path) {
    const message = body?.error?.message || `${path} answered ${status}`;
    super(message);
    this.status = status;
    this.body = body;
    this.path = path;
  }

  /** The API has no such endpoint (it is older than this page), rather than no such item. */
  get missingEndpoint() {
    return (
      (this.status === 404 || this.status === 405) &&
      this.body?.error?.code !== undefined &&
      /^no such resource|^Method Not Allowed/i.test(this.body.error.message || "")
    );
  }
}

function url(path, params) {
  const target = new URL(path, window.location.origin);
  for (const [name, value] of Object.entries(params || {})) {
    if (value !== undefined && value !== null && value !== "") target.searchParams.set(name, value);
  }
  return target;
}

async function request(path, params, accept) {
  const headers = { Accept: accept };
  if (session.token) headers.Authorization = `Bearer ${session.token}`;
  if (session.purpose) headers["X-Purpose"] = session.purpose;
  const response = await fetch(url(path, params), { headers, credentials: "omit" });
  if (response.ok) return response;
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  const error = new ApiError(response.status, body, path);
  if (response.status === 401) onUnauthorized(error);
  throw error;
}

export async function get(path, params) {
  return (await request(path, params, "application/json")).json();
}

export async function getText(path, params, accept = "text/html") {
  return (await request(path, params, accept)).text();
}

/** Every item of a paginated listing, following next_cursor, up to `cap` items. */
export async function getAll(path, params, cap = 20000) {
  const items = [];
  let cursor = null;
  for (;;) {
    const page = await get(path, { ...params, limit: 1000, cursor });
    items.push(...page.items);
    cursor = page.next_cursor;
    if (!cursor) return { items, truncated: false };
    if (items.length >= cap) return { items, truncated: true };
  }
}

/** A sentence for a panel that could not load. */
export function describe(error, what) {
  if (!(error instanceof ApiError)) return `${what}: ${error.message || error}`;
  if (error.status === 401) return `${what}: the API refused the token (401).`;
  if (error.status === 403) {
    return `${what}: this token's role may not read it (403). ${error.body?.error?.message || ""}`;
  }
  if (error.missingEndpoint) return `${what}: this API does not offer ${error.path} yet.`;
  if (error.status === 429) return `${what}: too many failed sign-ins from here; try again in a minute (429).`;
  if (error.status === 503) return `${what}: the API cannot reach its database (503).`;
  return `${what}: ${error.message} (${error.status}).`;
}
