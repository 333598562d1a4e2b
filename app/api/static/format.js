// Small, pure formatting helpers shared by the views.

/** 183.2 → "3:03"; 3725 → "1:02:05". */
export function duration(seconds) {
  if (!Number.isFinite(seconds) || seconds < 0) return "–";
  const s = Math.floor(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = String(s % 60).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${sec}` : `${m}:${sec}`;
}

/** A segment start for display: "0:24" (or "0:24.5" for half seconds). */
export function timestamp(seconds) {
  if (!Number.isFinite(seconds)) return "–";
  const tenths = Math.round(seconds * 10);
  const base = duration(Math.floor(tenths / 10));
  return tenths % 10 ? `${base}.${tenths % 10}` : base;
}

export function va(value) {
  return Number.isFinite(value) ? value.toFixed(2) : "–";
}

/** Score in [0, 1] as a whole percentage. */
export function percent(score) {
  return Number.isFinite(score) ? `${Math.round(score * 100)}%` : "–";
}

export function valenceWord(v) {
  if (!Number.isFinite(v)) return "unknown";
  if (v < 0.4) return "negative";
  if (v <= 0.6) return "neutral";
  return "positive";
}

export function arousalWord(a) {
  if (!Number.isFinite(a)) return "unknown";
  if (a < 0.4) return "calm";
  if (a <= 0.6) return "moderate";
  return "energetic";
}

/** Quadrant names of the circumplex model of affect (Russell, 1980). */
export const QUADRANTS = {
  excited: "happy · excited",
  tense: "tense · angry",
  sad: "sad · gloomy",
  calm: "calm · content",
};

export function mood(v, a) {
  if (!Number.isFinite(v) || !Number.isFinite(a)) return "";
  const reach = Math.max(Math.abs(v - 0.5), Math.abs(a - 0.5));
  if (reach < 0.08) return "emotionally neutral";
  const name = a >= 0.5
    ? (v >= 0.5 ? QUADRANTS.excited : QUADRANTS.tense)
    : (v >= 0.5 ? QUADRANTS.calm : QUADRANTS.sad);
  return reach < 0.2 ? `leaning ${name}` : name;
}

/** "Title" or "Title by Artist" for labels. */
export function trackLabel(track) {
  const title = track.title || `Track ${track.id}`;
  return track.artist ? `${title} by ${track.artist}` : title;
}
