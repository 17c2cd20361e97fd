// Talking to the controller: the dashboard endpoints under /api and the
// admin REST API under /v1, both authenticated by the session cookie.
// Every request carries X-Meshwan-CSRF, which the server requires on
// state-changing requests (a cross-site form cannot send it).

export class HTTPError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export async function request(method, path, body) {
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
    throw new HTTPError(resp.status, msg);
  }
  return data;
}

export const session = () => request("GET", "/api/session");
export const login = (token) => request("POST", "/api/login", { token });
export const logout = () => request("POST", "/api/logout");
export const history = (id) => request("GET", `/api/history?tunnel=${encodeURIComponent(id)}`);
export const createEnrollmentToken = (site, ttlSeconds) =>
  request("POST", "/v1/enrollment-tokens", { site, ttl_seconds: ttlSeconds });
