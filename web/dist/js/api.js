// Talking to the controller: the dashboard endpoints under /api and the
// admin REST API under /v1, both authenticated by the session cookie.
// Every request carries X-Meshwan-CSRF, which the server requires on
// state-changing requests (a cross-site form cannot send it).
//
// Requests that need the session are refused here, without a request,
// while the page is signed out (setSignedIn): after a sign-out nothing may
// ask for data, since the answer would be a 401 the browser logs as an
// error. A 401 from the server means the session ended (expired, or signed
// out in another tab); it goes to the one handler set by onSessionEnded,
// which shows the login form, and the caller gets an HTTPError with status
// 401 to ignore.

export class HTTPError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

let signedIn = false;
let sessionEnded = () => {};

/** setSignedIn allows (true) or refuses (false) requests needing the session. */
export function setSignedIn(v) { signedIn = v; }

/** onSessionEnded sets what a 401 from a request needing the session calls. */
export function onSessionEnded(fn) { sessionEnded = fn; }

async function request(method, path, body, { needsSession = true } = {}) {
  if (needsSession && !signedIn) throw new HTTPError(401, "signed out");
  const opts = {
    method,
    credentials: "same-origin",
    headers: { "X-Meshwan-CSRF": "1", Accept: "application/json" },
  };
  if (body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const resp = await fetch(path, opts);
  const text = await resp.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = null; }
  if (!resp.ok) {
    const msg = (data && (data.error || data.message)) || text || resp.statusText;
    if (resp.status === 401 && needsSession && signedIn) sessionEnded();
    throw new HTTPError(resp.status, msg);
  }
  return data;
}

// These three work signed in or not; /api/session answers 200 either way.
export const session = () => request("GET", "/api/session", undefined, { needsSession: false });
export const login = (token) => request("POST", "/api/login", { token }, { needsSession: false });
export const logout = () => request("POST", "/api/logout", undefined, { needsSession: false });

export const history = (id) => request("GET", `/api/history?tunnel=${encodeURIComponent(id)}`);
export const createEnrollmentToken = (site, ttlSeconds) =>
  request("POST", "/v1/enrollment-tokens", { site, ttl_seconds: ttlSeconds });
export const approveDevice = (id, site) =>
  request("POST", `/v1/devices/${encodeURIComponent(id)}:approve`, { site });
export const rejectDevice = (id) =>
  request("POST", `/v1/devices/${encodeURIComponent(id)}:reject`, {});
