// Thin client for the PhotoScore HTTP API: JSON in, JSON out, readable errors.
// Every failure becomes an ApiError whose message is fit to show a person.

const KEY_STORAGE = "photoscore.apiKey";

/** Base URL of the API: the page's directory (works behind a path prefix, too). */
export const apiBase = (() => {
  const url = new URL(".", document.baseURI);
  // If someone opens /static/index.html directly, the API still lives one level up.
  if (url.pathname.endsWith("/static/")) url.pathname = url.pathname.slice(0, -"static/".length);
  return url;
})();

export function apiUrl(path) {
  // Paths from the API ("/tracks/3/audio") are absolute; our own are relative ("tracks").
  return new URL(path, apiBase).toString();
}

export class ApiError extends Error {
  constructor(message, status = 0) {
    super(message);
    this.name = "ApiError";
    this.status = status;
  }
}

// ── API key: sessionStorage only (gone when the tab closes) ──
export const apiKey = {
  get() {
    try { return sessionStorage.getItem(KEY_STORAGE) || ""; } catch { return ""; }
  },
  set(value) {
    try {
      if (value) sessionStorage.setItem(KEY_STORAGE, value);
      else sessionStorage.removeItem(KEY_STORAGE);
    } catch { /* storage disabled: the key lives in the form field only */ }
  },
};

const STATUS_TEXT = {
  400: "The request was not accepted",
  401: "An API key is required, or the key is not valid",
  403: "This action is not allowed",
  404: "Not found",
  413: "The file is too large",
  415: "Unsupported file type",
  422: "Some input was not valid",
  429: "Too many requests; wait a moment and try again",
  500: "The server hit an unexpected error",
  502: "The service is unreachable (bad gateway)",
  503: "The service is temporarily unavailable; try again shortly",
  504: "The service took too long to answer",
};

/** One readable line for a FastAPI validation error object ({loc, msg}). */
function describeFieldError(err) {
  if (!err || typeof err !== "object") return String(err);
  const loc = Array.isArray(err.loc) ? err.loc.filter((p) => p !== "body" && p !== "query") : [];
  const msg = err.msg || err.message || JSON.stringify(err);
  return loc.length ? `${loc.join(".")}: ${msg}` : msg;
}

/** Turn any error body (string detail, list detail, plain text, HTML) into a sentence. */
export function messageFromBody(status, body, statusText = "") {
  const fallback = STATUS_TEXT[status] || statusText || "Request failed";
  if (body && typeof body === "object") {
    const { detail, errors } = body;
    // PhotoScore: a sentence in `detail` (422s add the raw `errors`; the sentence already says it).
    if (typeof detail === "string" && detail.trim()) return detail.trim();
    // Stock FastAPI validation errors: `detail` is a list of {loc, msg, type}.
    if (Array.isArray(detail) && detail.length) return detail.map(describeFieldError).join("; ");
    if (Array.isArray(errors) && errors.length) return errors.map(describeFieldError).join("; ");
    if (detail && typeof detail === "object") return describeFieldError(detail);
  }
  if (typeof body === "string") {
    const text = body.replace(/<[^>]*>/g, " ").replace(/\s+/g, " ").trim();
    if (text && text.length <= 300) return `${fallback}: ${text}`;
  }
  return `${fallback} (HTTP ${status}).`;
}

/**
 * fetch() wrapper: adds the API key when one is known, parses JSON, throws ApiError.
 * `auth: "required"` asks for a key and fails early without one; `withStatus` returns
 * `{status, data}` (POST /tracks says 201 for new and 200 for already-known audio).
 */
export async function request(
  path, { method = "GET", body, signal, auth = "optional", key, withStatus = false } = {},
) {
  const headers = { Accept: "application/json" };
  const useKey = key ?? apiKey.get();
  if (auth === "required" && !useKey) {
    throw new ApiError("Enter the API key to make changes to the library.", 401);
  }
  if (useKey) headers["X-API-Key"] = useKey;

  let response;
  try {
    response = await fetch(apiUrl(path), { method, body, headers, signal });
  } catch (err) {
    if (err && err.name === "AbortError") throw err;
    throw new ApiError(
      "Could not reach the PhotoScore service. Check that it is running and that you are online.",
      0,
    );
  }
  if (response.status === 204) return null;

  const type = response.headers.get("content-type") || "";
  let data = null;
  try {
    data = type.includes("json") ? await response.json() : await response.text();
  } catch {
    data = null;
  }
  if (!response.ok) {
    throw new ApiError(messageFromBody(response.status, data, response.statusText), response.status);
  }
  return withStatus ? { status: response.status, data } : data;
}

/** Query string of the options /recommend and /playlist share (moods repeat). */
function optionParams({ moods = [], segmentSeconds, offset, n, seed } = {}) {
  const params = new URLSearchParams();
  if (n !== undefined) params.set("n", String(n));
  if (offset) params.set("offset", String(offset));
  if (segmentSeconds) params.set("segment_seconds", String(segmentSeconds));
  if (seed !== undefined && seed !== null) params.set("seed", String(seed));
  for (const mood of moods) params.append("mood", mood);
  return params;
}

export function recommend(file, n, options = {}, signal) {
  const form = new FormData();
  form.append("image", file, file.name || "pasted-image.png");
  return request(`recommend?${optionParams({ ...options, n })}`, { method: "POST", body: form, signal });
}

/** One song per photo, in order: POST /playlist with repeated `images` parts. */
export function playlist(files, options = {}, signal) {
  const form = new FormData();
  for (const file of files) form.append("images", file, file.name || "photo.jpg");
  return request(`playlist?${optionParams(options)}`, { method: "POST", body: form, signal });
}

/** The plan POST /playlist answered, as a file: {blob, filename} (format: m3u8, xspf or cue). */
export async function exportPlaylist(plan, format, title) {
  const params = new URLSearchParams({ format });
  if (title) params.set("title", title);
  let response;
  try {
    response = await fetch(apiUrl(`playlist/export?${params}`), {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(plan),
    });
  } catch {
    throw new ApiError("Could not reach the PhotoScore service. Check that it is running and that you are online.", 0);
  }
  if (!response.ok) {
    let data = null;
    try { data = await response.json(); } catch { data = null; }
    throw new ApiError(messageFromBody(response.status, data, response.statusText), response.status);
  }
  const disposition = response.headers.get("content-disposition") || "";
  const match = disposition.match(/filename="([^"]+)"/);
  return { blob: await response.blob(), filename: match ? match[1] : `photoscore-album.${format}` };
}

/** A video's soundtrack: POST /soundtrack (the cue sheet, with a keyframe per scene). */
export function soundtrack(file, { minSceneSeconds, maxSongs, moods = [] } = {}, signal) {
  const form = new FormData();
  form.append("video", file, file.name || "video.mp4");
  const params = new URLSearchParams({ keyframes: "true" });
  if (minSceneSeconds) params.set("min_scene_seconds", String(minSceneSeconds));
  if (maxSongs) params.set("max_songs", String(maxSongs));
  for (const mood of moods) params.append("mood", mood);
  return request(`soundtrack?${params}`, { method: "POST", body: form, signal });
}

/** The soundtrack of a cue sheet as one Ogg/Opus blob: POST /soundtrack/preview (no re-upload). */
export async function soundtrackPreview(sheet, signal) {
  const headers = { "Content-Type": "application/json" };
  const key = apiKey.get();
  if (key) headers["X-API-Key"] = key;
  const body = JSON.stringify({ ...sheet, scenes: sheet.scenes.map((s) => ({ ...s, keyframe: null })) });
  let response;
  try {
    response = await fetch(apiUrl("soundtrack/preview"), { method: "POST", headers, body, signal });
  } catch (err) {
    if (err && err.name === "AbortError") throw err;
    throw new ApiError("Could not reach the PhotoScore service. Check that it is running and that you are online.", 0);
  }
  if (!response.ok) {
    let data = null;
    try { data = await response.json(); } catch { data = null; }
    throw new ApiError(messageFromBody(response.status, data, response.statusText), response.status);
  }
  return response.blob();
}

export function listTracks({ q = "", offset = 0, limit = 20 } = {}, signal) {
  const params = new URLSearchParams({ offset: String(offset), limit: String(limit) });
  if (q) params.set("q", q);
  return request(`tracks?${params}`, { signal });
}

export function addTrack({ file, title, artist, album, license }, key) {
  const form = new FormData();
  form.append("audio", file, file.name);
  if (title) form.append("title", title);
  if (artist) form.append("artist", artist);
  if (album) form.append("album", album);
  if (license) form.append("license", license);
  return request("tracks", { method: "POST", body: form, auth: "required", key, withStatus: true });
}

export function deleteTrack(id, key) {
  return request(`tracks/${encodeURIComponent(id)}`, { method: "DELETE", auth: "required", key });
}
