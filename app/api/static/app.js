// PhotoScore web page: pick a photo → songs whose emotion matches, and a small library manager.
// Plain ES modules, no build step, no third-party code.

import * as api from "./api.js";
import * as fmt from "./format.js";
import { renderArc, renderPlot } from "./plot.js";

const $ = (sel, root = document) => root.querySelector(sel);

/** Tiny element builder: h("p", {class: "x"}, "text", child). Text is always text, never HTML. */
function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "dataset") Object.assign(node.dataset, v);
    else if (k.startsWith("on") && typeof v === "function") node.addEventListener(k.slice(2), v);
    else if (v === true) node.setAttribute(k, "");
    else node.setAttribute(k, String(v));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function showAlert(node, message) {
  if (!message) {
    node.hidden = true;
    node.textContent = "";
    return;
  }
  node.replaceChildren(h("strong", {}, "Error: "), message);
  node.hidden = false;
}

function errorText(err) {
  if (err instanceof api.ApiError) return err.message;
  return `Something went wrong in the page: ${err && err.message ? err.message : err}`;
}

const isAbort = (err) => err && err.name === "AbortError";

// ───────────────────────────── Views (hash routing) ─────────────────────────────

const VIEWS = ["recommend", "album", "video", "library"];
let libraryLoaded = false;

function currentView() {
  const name = location.hash.replace(/^#\/?/, "");
  return VIEWS.includes(name) ? name : null;
}

function showView(name, { focus = false } = {}) {
  for (const view of document.querySelectorAll("[data-view]")) {
    view.hidden = view.dataset.view !== name;
  }
  for (const link of document.querySelectorAll("[data-view-link]")) {
    if (link.dataset.viewLink === name) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  document.title = { library: "Library — PhotoScore", album: "Album — PhotoScore", video: "Video — PhotoScore" }[name]
    || "PhotoScore — songs for your photo";
  if (name === "library" && !libraryLoaded) {
    libraryLoaded = true;
    library.load();
  }
  if (focus) {
    const heading = $(`#${name}-heading`);
    heading.tabIndex = -1;
    heading.focus();
  }
}

window.addEventListener("hashchange", () => {
  const name = currentView();
  if (name) showView(name, { focus: true });
});

// ───────────────────────────── Recommend view ─────────────────────────────

const recommendView = (() => {
  const input = $("#image-input");
  const dropzone = $("#dropzone");
  const nInput = $("#n-input");
  const again = $("#recommend-again");
  const alertBox = $("#recommend-error");
  const statusLine = $("#recommend-status");
  const photoCard = $("#photo-card");
  const preview = $("#photo-preview");
  const noPreview = $("#photo-unavailable");
  const photoName = $("#photo-name");
  const vaBox = $("#image-va");
  const moodLine = $("#image-mood");
  const plotCard = $("#plot-card");
  const plotBox = $("#plot");
  const resultsCard = $("#results-card");
  const resultsList = $("#results");
  const resultsMeta = $("#results-meta");
  const resultsEmpty = $("#results-empty");
  const introCard = $("#intro-card");
  const segmentInput = $("#segment-input");
  const moreButton = $("#more-songs");
  const moodButtons = [...document.querySelectorAll("[data-mood]")];
  const OPPOSITE = { happier: "sadder", sadder: "happier", calmer: "more energetic", "more energetic": "calmer" };

  let file = null;
  let last = null; // the latest response: its image, target and where the next page starts
  let shownCount = 0;
  let previewUrl = null;
  let controller = null;
  let plot = null;

  function readN() {
    const n = Number(nInput.value);
    if (!Number.isInteger(n) || n < 1 || n > 50) return null;
    return n;
  }

  function setPreview(f) {
    if (previewUrl) URL.revokeObjectURL(previewUrl);
    previewUrl = URL.createObjectURL(f);
    photoCard.hidden = false;
    noPreview.hidden = true;
    preview.hidden = false;
    preview.alt = `Your photo: ${f.name || "pasted image"}`;
    preview.src = previewUrl;
    photoName.textContent = f.name || "Pasted image";
  }

  preview.addEventListener("error", () => {
    if (!preview.getAttribute("src")) return;
    preview.hidden = true;
    noPreview.hidden = false;
  });

  function moods() {
    return moodButtons.filter((b) => b.getAttribute("aria-pressed") === "true").map((b) => b.dataset.mood);
  }

  for (const button of moodButtons) {
    button.addEventListener("click", () => {
      const on = button.getAttribute("aria-pressed") !== "true";
      button.setAttribute("aria-pressed", String(on));
      if (on) { // opposite words cannot both apply: pressing one releases the other
        const other = moodButtons.find((b) => b.dataset.mood === OPPOSITE[button.dataset.mood]);
        other?.setAttribute("aria-pressed", "false");
      }
      if (file) run();
    });
  }
  segmentInput.addEventListener("change", () => { if (file) run(); });

  function options(offset = 0) {
    return { moods: moods(), segmentSeconds: Number(segmentInput.value) || 2, offset };
  }

  function clearResults() {
    vaBox.hidden = true;
    moodLine.textContent = "";
    plotCard.hidden = true;
    plotBox.replaceChildren();
    plot = null;
    resultsCard.hidden = true;
    resultsList.replaceChildren();
    resultsMeta.textContent = "";
    resultsEmpty.hidden = true;
    moreButton.hidden = true;
    last = null;
    shownCount = 0;
  }

  /** Entry point for every way of giving a photo: picker, drop, paste. */
  function useFile(f) {
    if (!f) return;
    if (f.type && !f.type.startsWith("image/")) {
      showAlert(alertBox, `“${f.name}” is not an image (${f.type}). Choose a photo: JPEG, PNG, WebP or GIF.`);
      return;
    }
    file = f;
    again.disabled = false;
    setPreview(f);
    run();
  }

  async function run() {
    if (!file) return;
    const n = readN();
    if (n === null) {
      showAlert(alertBox, "“Songs to show” must be a whole number from 1 to 50.");
      nInput.focus();
      return;
    }
    controller?.abort();
    controller = new AbortController();
    const { signal } = controller;
    showAlert(alertBox, "");
    clearResults();
    introCard.hidden = true;
    statusLine.textContent = "Listening for the mood of your photo…";
    resultsCard.setAttribute("aria-busy", "true");
    document.body.classList.add("is-busy");
    try {
      const data = await api.recommend(file, n, options(), signal);
      render(data);
      const count = data.results.length;
      statusLine.textContent = count
        ? `Found ${count} song${count === 1 ? "" : "s"} for your photo.`
        : "The photo was read, but the library has no songs yet.";
    } catch (err) {
      if (isAbort(err)) return;
      statusLine.textContent = "";
      introCard.hidden = false;
      showAlert(alertBox, errorText(err));
    } finally {
      if (!signal.aborted) {
        resultsCard.removeAttribute("aria-busy");
        document.body.classList.remove("is-busy");
      }
    }
  }

  function render(data) {
    const { image, results } = data;
    $("[data-testid=image-valence]", vaBox).textContent = fmt.va(image.valence);
    $("[data-testid=image-valence-word]", vaBox).textContent = `(${fmt.valenceWord(image.valence)})`;
    $("[data-testid=image-arousal]", vaBox).textContent = fmt.va(image.arousal);
    $("[data-testid=image-arousal-word]", vaBox).textContent = `(${fmt.arousalWord(image.arousal)})`;
    $(".valence-fill", vaBox).style.width = `${Math.round(image.valence * 100)}%`;
    $(".arousal-fill", vaBox).style.width = `${Math.round(image.arousal * 100)}%`;
    vaBox.hidden = false;
    const mood = fmt.mood(image.valence, image.arousal);
    moodLine.textContent = mood ? `Mood: ${mood}` : "";

    resultsCard.hidden = false;
    resultsMeta.textContent =
      `${results.length} song${results.length === 1 ? "" : "s"} · model ${data.model_version}` +
      ` · ${Math.round(data.took_ms)} ms`;
    resultsEmpty.hidden = results.length > 0;
    resultsList.replaceChildren(...results.map((r, i) => resultRow(r, i + 1)));
    last = data;
    shownCount = results.length;
    moreButton.hidden = data.next_offset === null || data.next_offset === undefined;
    drawPlot();
  }

  /** "More songs": the next page of the same ranking, appended (never a song already shown). */
  moreButton.addEventListener("click", async () => {
    if (!file || !last || last.next_offset === null) return;
    const n = readN() || 10;
    moreButton.disabled = true;
    statusLine.textContent = "Finding more songs…";
    try {
      const data = await api.recommend(file, n, options(last.next_offset));
      const rows = data.results.map((r, i) => resultRow(r, shownCount + i + 1));
      resultsList.append(...rows);
      shownCount += rows.length;
      last = { ...data, results: [...last.results, ...data.results] };
      moreButton.hidden = data.next_offset === null || data.next_offset === undefined || !data.results.length;
      statusLine.textContent = data.results.length
        ? `Added ${data.results.length} more song${data.results.length === 1 ? "" : "s"}.`
        : "No more songs for this photo.";
      drawPlot();
      rows[0]?.querySelector(".play-match, h3")?.focus?.();
    } catch (err) {
      statusLine.textContent = "";
      showAlert(alertBox, errorText(err));
    } finally {
      moreButton.disabled = false;
    }
  });

  function drawPlot() {
    const { image, results, target } = last;
    plotCard.hidden = false;
    plot = renderPlot(
      plotBox,
      { image, results, target, imageUrl: preview.hidden ? null : previewUrl, imageName: file?.name },
      {
        onHover: (rank) => highlight(rank),
        onSelect: (rank) => {
          const row = resultsList.querySelector(`[data-rank="${rank}"]`);
          row?.scrollIntoView({ block: "nearest", behavior: "smooth" });
          row?.querySelector(".play-match")?.focus({ preventScroll: true });
        },
      },
    );
  }

  function highlight(rank) {
    plot?.highlight(rank);
    for (const row of resultsList.children) {
      row.classList.toggle("is-highlighted", rank !== null && Number(row.dataset.rank) === rank);
    }
  }

  function resultRow(result, rank) {
    const { track, score, segment, why } = result;
    const start = Math.max(0, Number(segment?.start) || 0);
    const end = Number(segment?.end) || start;
    const label = fmt.trackLabel(track);
    const details = [track.artist, track.album].filter(Boolean).join(" · ");

    const row = h("li", {
      class: "result",
      "data-testid": "result-row",
      dataset: { rank: String(rank), trackId: String(track.id), segmentStart: String(start) },
    },
    h("div", { class: "result-head" },
      h("span", { class: "rank", "aria-hidden": "true" }, String(rank)),
      h("div", { class: "result-title" },
        h("h3", { "data-testid": "result-title" }, track.title || `Track ${track.id}`),
        h("p", { class: "artist", "data-testid": "result-artist" }, details || "Unknown artist")),
      h("div", { class: "score", "data-testid": "result-score" },
        h("span", { class: "score-value" }, fmt.percent(score)),
        h("span", { class: "score-label" }, " match"),
        h("span", { class: "bar", "aria-hidden": "true" },
          h("span", { class: "bar-fill score-fill", style: `width:${Math.round(score * 100)}%` })))),
    h("p", { class: "segment small", "data-testid": "result-segment" },
      `Best ${end - start > 2.5 ? `${Math.round(end - start)} s` : "moment"} ${fmt.timestamp(start)}–${fmt.timestamp(end)}`,
      Number.isFinite(track.valence) && Number.isFinite(track.arousal)
        ? ` · valence ${fmt.va(track.valence)}, arousal ${fmt.va(track.arousal)}`
        : ""),
    why ? h("p", { class: "why small", "data-testid": "result-why" }, whyLine(why)) : null);

    if (track.audio_url) row.append(player(track, start, label, end));
    else row.append(h("p", { class: "muted small" }, "No audio is stored for this song."));
    if (track.license) {
      row.append(h("details", { class: "license small", "data-testid": "result-license" },
        h("summary", {}, "Licence"), h("p", {}, track.license)));
    }

    row.addEventListener("mouseenter", () => highlight(rank));
    row.addEventListener("mouseleave", () => highlight(null));
    row.addEventListener("focusin", () => highlight(rank));
    row.addEventListener("focusout", (e) => {
      if (!row.contains(e.relatedTarget)) highlight(null);
    });
    return row;
  }

  function player(track, start, label, end) {
    const audio = h("audio", {
      controls: true,
      preload: "metadata",
      "data-testid": "result-audio",
      "aria-label": `${label}, starting at its best moment ${fmt.timestamp(start)}`,
    });
    startAtSegment(audio, api.apiUrl(track.audio_url), start, end);
    const button = h("button", {
      type: "button",
      class: "button play-match",
      "data-testid": "play-match",
      // The name starts with the visible words (WCAG 2.5.3, axe's label-content-name-mismatch).
      "aria-label": `Play from ${fmt.timestamp(start)}: ${label}`,
    }, `▶ Play from ${fmt.timestamp(start)}`);
    button.addEventListener("click", () => {
      if (!audio.paused) {
        audio.pause();
        return;
      }
      audio.currentTime = start;
      audio.play().catch((err) => {
        if (!isAbort(err)) showAlert(alertBox, `Could not play “${label}”: ${err.message}`);
      });
    });
    audio.addEventListener("play", () => {
      button.textContent = "❚❚ Pause";
      button.setAttribute("aria-label", `Pause: ${label}`);
    });
    audio.addEventListener("pause", () => {
      button.textContent = `▶ Play from ${fmt.timestamp(start)}`;
      button.setAttribute("aria-label", `Play from ${fmt.timestamp(start)}: ${label}`);
    });
    audio.addEventListener("error", () => {
      const code = audio.error?.code;
      const why = code === 4 ? "the format is not supported by this browser or the file is missing"
        : code === 2 ? "a network error interrupted it" : "it could not be decoded";
      rowOf(audio)?.append(h("p", { class: "inline-error small", role: "alert" }, `This song cannot play: ${why}.`));
    }, { once: true });
    return h("div", { class: "player" }, button, audio);
  }

  const rowOf = (node) => node.closest(".result");

  return { input, dropzone, nInput, again, useFile, run, active: () => !$("#recommend").hidden };
})();

/**
 * Start a player at the matched moment: a media fragment (`#t=start`) for browsers that honour
 * it, and an explicit seek once metadata is known (or on the first play, whichever comes first).
 */
export function startAtSegment(audio, url, start, end = null) {
  let positioned = false;
  const seek = () => {
    if (positioned) return;
    positioned = true;
    if (Math.abs(audio.currentTime - start) > 0.05) {
      try { audio.currentTime = start; } catch { /* not seekable yet: the fragment covers it */ }
    }
  };
  audio.addEventListener("loadedmetadata", seek, { once: true });
  audio.addEventListener("play", () => {
    seek();
    for (const other of document.querySelectorAll("audio")) {
      if (other !== audio && !other.paused) other.pause();
    }
  });
  // Stop at the end of the window (the fragment's end is only a hint to the browser).
  if (end !== null && end > start) {
    audio.dataset.segmentEnd = String(end);
    audio.addEventListener("timeupdate", () => {
      if (!audio.paused && audio.currentTime >= end) {
        audio.pause();
        audio.currentTime = start;
      }
    });
  }
  const fragment = end !== null && end > start ? `#t=${start.toFixed(2)},${end.toFixed(2)}`
    : start > 0 ? `#t=${start.toFixed(2)}` : "";
  audio.src = `${url}${fragment}`;
}

/** One plain line saying why a song fits: both moods in words and numbers, and the distance. */
export function whyLine(why) {
  const parts = [`Photo: ${why.photo_words} (${fmt.va(why.photo.valence)}, ${fmt.va(why.photo.arousal)})`];
  if (why.song) {
    parts.push(`song: ${why.song_words} (${fmt.va(why.song.valence)}, ${fmt.va(why.song.arousal)}), ${fmt.va(why.distance)} apart`);
  }
  if (why.segment) parts.push(`this part: ${why.segment_words}`);
  if (why.target) parts.push(`steered towards (${fmt.va(why.target.valence)}, ${fmt.va(why.target.arousal)})`);
  return `Why: ${parts.join(" · ")}`;
}

// Picker, drop and paste all land in useFile().
recommendView.input.addEventListener("change", () => {
  const f = recommendView.input.files?.[0];
  recommendView.useFile(f);
  recommendView.input.value = ""; // so choosing the same file again still fires "change"
});

$("#recommend-form").addEventListener("submit", (e) => {
  e.preventDefault();
  recommendView.run();
});

/** A view's file input, form and drop zone: chosen or dropped files go to onFiles, submit runs. */
function wireUpload({ input, form, dropzone, onFiles, run }) {
  input.addEventListener("change", () => {
    onFiles([...(input.files || [])]);
    input.value = ""; // so choosing the same file again still fires "change"
  });
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    run();
  });
  dropzone.addEventListener("dragover", (e) => {
    e.preventDefault();
    e.stopPropagation();
    e.dataTransfer.dropEffect = "copy";
  });
  dropzone.addEventListener("drop", (e) => {
    e.preventDefault();
    e.stopPropagation();
    onFiles([...e.dataTransfer.files]);
  });
}

let dragDepth = 0;
function hasFiles(e) {
  return [...(e.dataTransfer?.types || [])].includes("Files");
}
document.addEventListener("dragenter", (e) => {
  if (!hasFiles(e) || !recommendView.active()) return;
  dragDepth += 1;
  recommendView.dropzone.classList.add("is-dragging");
});
document.addEventListener("dragleave", () => {
  dragDepth = Math.max(0, dragDepth - 1);
  if (!dragDepth) recommendView.dropzone.classList.remove("is-dragging");
});
document.addEventListener("dragover", (e) => {
  if (!hasFiles(e)) return;
  e.preventDefault(); // stop the browser from opening the file instead
  e.dataTransfer.dropEffect = recommendView.active() || albumActive() || videoActive() ? "copy" : "none";
});
const albumActive = () => !$("#album").hidden;
const videoActive = () => !$("#video").hidden;
document.addEventListener("drop", (e) => {
  if (!hasFiles(e)) return;
  e.preventDefault();
  dragDepth = 0;
  recommendView.dropzone.classList.remove("is-dragging");
  const files = [...e.dataTransfer.files];
  if (albumActive()) albumView.setFiles(files);
  if (videoActive()) videoView.setFile(files.find((f) => f.type.startsWith("video/")) || files[0]);
  if (!recommendView.active()) return;
  recommendView.useFile(files.find((f) => f.type.startsWith("image/")) || files[0]);
});

document.addEventListener("paste", (e) => {
  if (!recommendView.active()) return;
  const item = [...(e.clipboardData?.items || [])].find(
    (it) => it.kind === "file" && it.type.startsWith("image/"),
  );
  if (!item) return; // plain text: let it paste normally
  e.preventDefault();
  const blob = item.getAsFile();
  const ext = (blob.type.split("/")[1] || "png").replace("jpeg", "jpg");
  recommendView.useFile(new File([blob], `pasted-image.${ext}`, { type: blob.type }));
});

// ───────────────────────────── Album view ─────────────────────────────

const albumView = (() => {
  const input = $("#album-input");
  const dropzone = $("#album-dropzone");
  const photoList = $("#album-photos");
  const segment = $("#album-segment");
  const build = $("#album-build");
  const alertBox = $("#album-error");
  const statusLine = $("#album-status");
  const plotCard = $("#album-plot-card");
  const plotBox = $("#album-plot");
  const resultCard = $("#album-result");
  const meta = $("#album-meta");
  const sequence = $("#album-sequence");
  const playButton = $("#album-play");
  const audio = $("#album-audio");
  const exportButtons = [...document.querySelectorAll("[data-export]")];
  const MAX = 50;
  let files = [];
  let urls = [];
  let entries = [];
  let plan = null; // the last answer of POST /playlist, as is: what the downloads export
  let playing = -1;

  function setFiles(list) {
    const images = list.filter((f) => !f.type || f.type.startsWith("image/"));
    for (const url of urls) URL.revokeObjectURL(url);
    files = images.slice(0, MAX);
    urls = files.map((f) => URL.createObjectURL(f));
    photoList.replaceChildren(...files.map((f, i) => h("li", { class: "album-photo", "data-testid": "album-photo" },
      h("img", { src: urls[i], alt: `Photo ${i + 1}: ${f.name}` }), h("span", { class: "small" }, `${i + 1}. ${f.name}`))));
    build.disabled = files.length < 2;
    showAlert(alertBox, "");
    const skipped = list.length - files.length;
    statusLine.textContent = files.length < 2
      ? "Choose at least two photos."
      : `${files.length} photos ready${skipped ? ` (${skipped} skipped: not images or over ${MAX})` : ""}.`;
  }

  async function run() {
    if (files.length < 2) {
      showAlert(alertBox, "Choose at least two photos for an album.");
      return;
    }
    stop();
    build.disabled = true;
    showAlert(alertBox, "");
    statusLine.textContent = `Reading ${files.length} photos and choosing a song for each…`;
    try {
      const data = await api.playlist(files, { segmentSeconds: Number(segment.value) || 6 });
      entries = data.entries;
      plan = data;
      render(data);
      statusLine.textContent = `Playlist of ${entries.length} songs, ${fmt.duration(data.total_duration)} in all.`;
    } catch (err) {
      statusLine.textContent = "";
      showAlert(alertBox, errorText(err));
    } finally {
      build.disabled = files.length < 2;
    }
  }

  function render(data) {
    plotCard.hidden = false;
    renderArc(plotBox, data.entries);
    resultCard.hidden = false;
    meta.textContent = `${data.entries.length} songs · ${fmt.duration(data.total_duration)} · model ${data.model_version}`;
    sequence.replaceChildren(...data.entries.map((e, i) => h("li", {
      class: "result album-entry", "data-testid": "album-entry", dataset: { index: String(i), trackId: String(e.track.id) },
    },
    h("div", { class: "result-head" },
      urls[e.index] ? h("img", { class: "album-thumb", src: urls[e.index], alt: "" }) : null,
      h("div", { class: "result-title" },
        h("h3", { "data-testid": "album-entry-title" }, e.track.title || `Track ${e.track.id}`),
        h("p", { class: "artist small" }, `Photo ${i + 1}${e.filename ? ` (${e.filename})` : ""} · ` +
          `${fmt.timestamp(e.segment.start)}–${fmt.timestamp(e.segment.end)} · ${fmt.percent(e.score)} match`))),
    h("p", { class: "why small", "data-testid": "album-entry-why" }, whyLine(e.why)))));
  }

  function stop() {
    playing = -1;
    audio.pause();
    for (const row of sequence.children) row.classList.remove("is-playing");
    playButton.textContent = "▶ Play the album";
  }

  function playAt(i) {
    if (i >= entries.length) {
      stop();
      statusLine.textContent = "The album has finished.";
      return;
    }
    const e = entries[i];
    playing = i;
    for (const row of sequence.children) row.classList.toggle("is-playing", Number(row.dataset.index) === i);
    audio.dataset.playing = String(i);
    if (!e.track.audio_url) {
      playAt(i + 1);
      return;
    }
    audio.src = `${api.apiUrl(e.track.audio_url)}#t=${e.segment.start.toFixed(2)},${e.segment.end.toFixed(2)}`;
    audio.addEventListener("loadedmetadata", () => { audio.currentTime = e.segment.start; }, { once: true });
    statusLine.textContent = `Playing ${i + 1} of ${entries.length}: ${fmt.trackLabel(e.track)}`;
    audio.play().catch((err) => {
      if (!isAbort(err)) showAlert(alertBox, `Could not play “${fmt.trackLabel(e.track)}”: ${err.message}`);
    });
  }

  audio.addEventListener("timeupdate", () => {
    if (playing < 0) return;
    const e = entries[playing];
    if (audio.currentTime >= e.segment.end - 0.05) playAt(playing + 1);
  });
  audio.addEventListener("pause", () => {
    // the fragment's end pauses the element: move on to the next photo's song
    if (playing >= 0 && audio.currentTime >= entries[playing].segment.end - 0.25) playAt(playing + 1);
  });
  playButton.addEventListener("click", () => {
    if (playing >= 0) {
      stop();
      return;
    }
    playButton.textContent = "■ Stop";
    playAt(0);
  });

  /** Save the plan as M3U8, XSPF or the JSON cue sheet (the service writes the file). */
  async function download(button) {
    if (!plan) return;
    const label = button.textContent.trim();
    button.disabled = true;
    showAlert(alertBox, "");
    try {
      const { blob, filename } = await api.exportPlaylist(plan, button.dataset.export);
      const link = h("a", { href: URL.createObjectURL(blob), download: filename, hidden: true });
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(link.href), 60_000);
      statusLine.textContent = `Saved ${filename} (${label}).`;
    } catch (err) {
      showAlert(alertBox, errorText(err));
    } finally {
      button.disabled = false;
    }
  }
  for (const button of exportButtons) button.addEventListener("click", () => download(button));

  wireUpload({ input, form: $("#album-form"), dropzone, onFiles: setFiles, run });
  return { setFiles, run };
})();

// ───────────────────────────── Video view ─────────────────────────────

const videoView = (() => {
  const input = $("#video-input");
  const dropzone = $("#video-dropzone");
  const nameLine = $("#video-name");
  const minScene = $("#video-min-scene");
  const maxSongs = $("#video-max-songs");
  const build = $("#video-build");
  const alertBox = $("#video-error");
  const statusLine = $("#video-status");
  const resultCard = $("#video-result");
  const meta = $("#video-meta");
  const player = $("#video-player");
  const audio = $("#video-audio");
  const strip = $("#video-strip");
  const downloadButton = $("#video-download");
  let file = null;
  let videoUrl = null;
  let audioUrl = null;
  let sheet = null; // the last answer of POST /soundtrack, as is: what the download saves
  let controller = null;

  function setFile(f) {
    if (!f) return;
    file = f;
    nameLine.textContent = f.name;
    build.disabled = false;
    showAlert(alertBox, "");
    statusLine.textContent = "Video ready: choose Score the video.";
  }

  function clock(seconds) {
    return fmt.timestamp(seconds);
  }

  async function run() {
    if (!file) {
      showAlert(alertBox, "Choose a video first.");
      return;
    }
    controller?.abort();
    controller = new AbortController();
    const { signal } = controller;
    build.disabled = true;
    showAlert(alertBox, "");
    statusLine.textContent = "Finding the scenes and choosing their songs…";
    try {
      const data = await api.soundtrack(file, {
        minSceneSeconds: Number(minScene.value) || 3,
        maxSongs: Number(maxSongs.value) || undefined,
      }, signal);
      sheet = data;
      render(data);
      statusLine.textContent = "Rendering the soundtrack preview…";
      const blob = await api.soundtrackPreview(data, signal);
      if (audioUrl) URL.revokeObjectURL(audioUrl);
      audioUrl = URL.createObjectURL(blob);
      audio.src = audioUrl;
      audio.dataset.ready = "true";
      statusLine.textContent = `${data.scenes.length} scenes, ${data.cues.length} songs: press play on the video.`;
    } catch (err) {
      if (isAbort(err)) return;
      statusLine.textContent = "";
      showAlert(alertBox, errorText(err));
    } finally {
      build.disabled = !file;
    }
  }

  function render(data) {
    resultCard.hidden = false;
    if (videoUrl) URL.revokeObjectURL(videoUrl);
    videoUrl = URL.createObjectURL(file);
    player.src = videoUrl;
    delete audio.dataset.ready;
    audio.removeAttribute("src");
    const v = data.video;
    meta.textContent = `${fmt.duration(v.duration)} · ${v.width}×${v.height} · ${v.shots} shots, ` +
      `${data.scenes.length} scenes, ${data.cues.length} songs · model ${data.model_version}`;
    strip.replaceChildren(...data.scenes.map((scene) => {
      const cue = data.cues[scene.cue];
      const title = cue.song.title || `Track ${cue.song.id}`;
      const when = `${clock(scene.start)}–${clock(scene.end)}`;
      return h("li", { class: "video-scene", "data-testid": "video-scene", dataset: { index: String(scene.index),
        trackId: String(cue.song.id), start: String(scene.start) } },
      h("button", { type: "button", class: "video-scene-button", "data-testid": "video-scene-button",
        "aria-label": `Play from scene ${scene.index + 1}, ${when}: ${title}` },
      scene.keyframe ? h("img", { src: scene.keyframe, alt: "" }) : null),
      h("h3", { "data-testid": "video-scene-title" }, title),
      h("p", { class: "small muted" }, `Scene ${scene.index + 1} · ${when}`),
      h("p", { class: "why small", "data-testid": "video-scene-why" }, whyLine(cue.why)));
    }));
  }

  // The preview follows the video: same clock, same play/pause, muted video.
  function follow() {
    if (!audio.dataset.ready) return;
    if (Math.abs(audio.currentTime - player.currentTime) > 0.15) audio.currentTime = player.currentTime;
  }
  player.addEventListener("play", () => {
    if (!audio.dataset.ready) return;
    follow();
    audio.play().catch((err) => {
      if (!isAbort(err)) showAlert(alertBox, `Could not play the soundtrack: ${err.message}`);
    });
  });
  player.addEventListener("pause", () => audio.pause());
  player.addEventListener("seeked", follow);
  player.addEventListener("ratechange", () => { audio.playbackRate = player.playbackRate; });
  player.addEventListener("timeupdate", () => {
    follow();
    const t = player.currentTime;
    for (const row of strip.children) {
      const scene = sheet?.scenes[Number(row.dataset.index)];
      row.classList.toggle("is-playing", Boolean(scene) && t >= scene.start && t < scene.end);
    }
  });
  strip.addEventListener("click", (e) => {
    const row = e.target.closest(".video-scene");
    if (!row || !e.target.closest("button")) return;
    player.currentTime = Number(row.dataset.start);
    player.play().catch(() => {});
  });

  downloadButton.addEventListener("click", () => {
    if (!sheet) return;
    const plain = { ...sheet, scenes: sheet.scenes.map((s) => ({ ...s, keyframe: null })) };
    const blob = new Blob([JSON.stringify(plain, null, 2)], { type: "application/json" });
    const stem = (file?.name || "video").replace(/\.[^.]+$/, "");
    const filename = `${stem}.cue.json`;
    const link = h("a", { href: URL.createObjectURL(blob), download: filename, hidden: true });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 60_000);
    statusLine.textContent = `Saved ${filename}.`;
  });

  wireUpload({ input, form: $("#video-form"), dropzone, onFiles: (files) => setFile(files[0]), run });
  return { setFile, run };
})();

// ───────────────────────────── Library view ─────────────────────────────

const library = (() => {
  const PAGE = 20;
  const search = $("#search-input");
  const list = $("#track-list");
  const alertBox = $("#library-error");
  const statusLine = $("#library-status");
  const prev = $("#page-prev");
  const next = $("#page-next");
  const pageInfo = $("#page-info");
  const pager = prev.closest(".pager");
  let offset = 0;
  let total = 0;
  let controller = null;
  let debounce = 0;
  let lastMessage = "";

  async function load({ message = "" } = {}) {
    controller?.abort();
    controller = new AbortController();
    const { signal } = controller;
    const q = search.value.trim();
    list.setAttribute("aria-busy", "true");
    showAlert(alertBox, "");
    lastMessage = message;
    statusLine.textContent = message || "Loading songs…";
    try {
      const data = await api.listTracks({ q, offset, limit: PAGE }, signal);
      total = data.total;
      if (!data.items.length && offset > 0 && total > 0) {
        offset = Math.max(0, Math.floor((total - 1) / PAGE) * PAGE);
        return load({ message });
      }
      list.replaceChildren(...data.items.map(trackRow));
      const summary = total === 0
        ? (q ? `No songs match “${q}”.` : "The library is empty. Add songs with the form.")
        : `${total} song${total === 1 ? "" : "s"}${q ? ` matching “${q}”` : ""}.`;
      statusLine.textContent = message ? `${message} ${summary}` : summary;
      const first = total ? offset + 1 : 0;
      const last = offset + data.items.length;
      pageInfo.textContent = `${first}–${last} of ${total}`;
      pager.hidden = total <= PAGE && offset === 0;
      prev.disabled = offset === 0;
      next.disabled = last >= total;
    } catch (err) {
      if (isAbort(err)) return;
      statusLine.textContent = "";
      showAlert(alertBox, errorText(err));
    } finally {
      if (!signal.aborted) list.removeAttribute("aria-busy");
    }
  }

  function trackRow(track) {
    const label = fmt.trackLabel(track);
    const meta = [track.artist, track.album, fmt.duration(track.duration),
      `${track.clip_count} clip${track.clip_count === 1 ? "" : "s"}`].filter(Boolean).join(" · ");
    const hasVA = Number.isFinite(track.valence) && Number.isFinite(track.arousal);
    const del = h("button", {
      type: "button",
      class: "button danger secondary",
      "data-testid": "track-delete",
      "aria-label": `Delete ${label}`,
    }, "Delete");
    del.addEventListener("click", () => confirmDelete(track, del));
    return h("li", { class: "track", "data-testid": "track-row", dataset: { trackId: String(track.id) } },
      h("div", { class: "track-main" },
        h("h3", { "data-testid": "track-title" }, track.title || `Track ${track.id}`),
        h("p", { class: "small" }, meta),
        hasVA ? h("p", { class: "small muted" },
          `valence ${fmt.va(track.valence)} (${fmt.valenceWord(track.valence)}) · ` +
          `arousal ${fmt.va(track.arousal)} (${fmt.arousalWord(track.arousal)})`) : null,
        track.license ? h("p", { class: "license small" }, track.license) : null),
      h("div", { class: "track-actions" },
        track.audio_url
          ? h("audio", { controls: true, preload: "none", src: api.apiUrl(track.audio_url), "aria-label": label })
          : null,
        del));
  }

  // ── delete, behind a confirmation dialog ──
  const dialog = $("#delete-dialog");
  const dialogText = $("#delete-text");
  const dialogKeyRow = $("#delete-key-row");
  const dialogKey = $("#delete-key");
  const dialogError = $("#delete-error");
  const confirmButton = $("[data-testid=delete-confirm]", dialog);
  let pending = null;

  function confirmDelete(track, opener) {
    pending = { track, opener };
    dialogText.textContent =
      `“${fmt.trackLabel(track)}” will be removed from the library and from recommendations. ` +
      "This cannot be undone.";
    const needKey = !api.apiKey.get();
    dialogKeyRow.hidden = !needKey;
    dialogKey.value = "";
    showAlert(dialogError, "");
    confirmButton.disabled = false;
    dialog.showModal();
    (needKey ? dialogKey : $("[data-testid=delete-cancel]", dialog)).focus();
  }

  $("#delete-form").addEventListener("submit", async (e) => {
    if (e.submitter?.value !== "confirm" || !pending) return; // Cancel: let the dialog close
    e.preventDefault();
    const key = dialogKeyRow.hidden ? api.apiKey.get() : dialogKey.value.trim();
    if (!key) {
      showAlert(dialogError, "Enter the API key to delete songs.");
      dialogKey.focus();
      return;
    }
    confirmButton.disabled = true;
    const { track } = pending;
    try {
      await api.deleteTrack(track.id, key);
      api.apiKey.set(key);
      keyField.sync();
      dialog.close("deleted");
      pending = null;
      search.focus();
      await load({ message: `Deleted “${fmt.trackLabel(track)}”.` });
    } catch (err) {
      if (err.status === 404) {
        dialog.close("gone");
        pending = null;
        await load({ message: "That song was already deleted." });
        return;
      }
      if (err.status === 401 || err.status === 403) {
        api.apiKey.set("");
        keyField.sync();
        dialogKeyRow.hidden = false;
      }
      showAlert(dialogError, errorText(err));
      confirmButton.disabled = false;
    }
  });
  dialog.addEventListener("close", () => {
    if (pending) {
      pending.opener?.focus();
      pending = null;
    }
  });

  search.addEventListener("input", () => {
    clearTimeout(debounce);
    debounce = setTimeout(() => {
      offset = 0;
      load();
    }, 250);
  });
  $("#search-form").addEventListener("submit", (e) => {
    e.preventDefault();
    clearTimeout(debounce);
    offset = 0;
    load();
  });
  prev.addEventListener("click", () => {
    offset = Math.max(0, offset - PAGE);
    load();
  });
  next.addEventListener("click", () => {
    offset += PAGE;
    load();
  });

  return {
    load,
    reset() {
      search.value = "";
      offset = 0;
    },
    get message() { return lastMessage; },
  };
})();

// ── the API key field shared by add (and, through storage, delete) ──
const keyField = (() => {
  const input = $("#add-key");
  const forget = $("#forget-key");
  function sync() {
    const key = api.apiKey.get();
    if (key && !input.value) input.value = key;
    if (!key && input.value === input.dataset.stored) input.value = "";
    input.dataset.stored = key;
    forget.hidden = !key;
  }
  forget.addEventListener("click", () => {
    api.apiKey.set("");
    input.value = "";
    sync();
    input.focus();
  });
  sync();
  return { input, sync };
})();

// ── add songs ──
(() => {
  const form = $("#add-form");
  const fileInput = $("#add-file");
  const title = $("#add-title");
  const artist = $("#add-artist");
  const album = $("#add-album");
  const license = $("#add-license");
  const submit = $("#add-submit");
  const alertBox = $("#add-error");
  const statusLine = $("#add-status");

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    showAlert(alertBox, "");
    const files = [...(fileInput.files || [])];
    const key = keyField.input.value.trim();
    if (!files.length) {
      showAlert(alertBox, "Choose at least one audio file to add.");
      fileInput.focus();
      return;
    }
    if (!key) {
      showAlert(alertBox, "Enter the API key to add songs.");
      keyField.input.focus();
      return;
    }
    api.apiKey.set(key);
    keyField.sync();

    submit.disabled = true;
    form.setAttribute("aria-busy", "true");
    const added = [];
    const known = [];
    const failed = [];
    try {
      for (const [i, f] of files.entries()) {
        statusLine.textContent = files.length > 1
          ? `Adding ${i + 1} of ${files.length}: ${f.name}… (analysing the audio can take a while)`
          : `Adding ${f.name}… (analysing the audio can take a while)`;
        try {
          const { status, data } = await api.addTrack({
            file: f,
            title: files.length === 1 ? title.value.trim() : "",
            artist: artist.value.trim(),
            album: album.value.trim(),
            license: license.value.trim(),
          }, key);
          (status === 201 ? added : known).push(data);
        } catch (err) {
          failed.push(`${f.name}: ${errorText(err)}`);
          if (err.status === 401 || err.status === 403) {
            api.apiKey.set("");
            keyField.sync();
            break; // the same key will fail for every other file too
          }
        }
      }
    } finally {
      submit.disabled = false;
      form.removeAttribute("aria-busy");
    }

    const parts = [];
    if (added.length) {
      parts.push(added.length === 1
        ? `Added “${added[0].title}” (${added[0].clip_count} clips).`
        : `Added ${added.length} songs.`);
    }
    if (known.length) {
      parts.push(known.length === 1
        ? `“${known[0].title}” was already in the library.`
        : `${known.length} songs were already in the library.`);
    }
    statusLine.textContent = parts.join(" ");
    if (failed.length) {
      showAlert(alertBox, failed.length === 1 ? `Could not add ${failed[0]}` : `Could not add: ${failed.join("; ")}`);
    }
    if (added.length || known.length) {
      fileInput.value = "";
      title.value = "";
      library.reset();
      await library.load({ message: parts.join(" ") });
    }
  });
})();

// ───────────────────────────── indexing progress ─────────────────────────────

/**
 * While a `photoscore index` run adds songs (the quickstart's demo library), say how far it is:
 * /ready's `indexing` ("indexing the demo library: 12 of 73 songs"). Songs already indexed are
 * recommended meanwhile. /ready answers 503 while the service warms up, with the same body.
 */
async function pollIndexing(shown = false) {
  const line = $("#indexing-status");
  let progress = null;
  try {
    const response = await fetch(api.apiUrl("ready"), { headers: { Accept: "application/json" } });
    progress = (await response.json()).indexing;
  } catch {
    progress = shown ? { state: "running", message: line.textContent } : null; // try again
  }
  const running = Boolean(progress && progress.state === "running");
  if (running || shown) {
    line.textContent = progress ? progress.message : "";
    line.hidden = !progress;
  }
  if (running) setTimeout(() => pollIndexing(true), 2000);
  else if (shown) setTimeout(() => { line.hidden = true; }, 10000); // "indexed …: 73 of 73 songs"
}

// ───────────────────────────── start ─────────────────────────────

showView(currentView() || "recommend");
document.documentElement.classList.add("js");
pollIndexing();
