// The valence–arousal plane: an inline SVG with the photo and its recommended songs.
// Built with DOM calls only (titles and artists are user data: never innerHTML).

import * as fmt from "./format.js";

const NS = "http://www.w3.org/2000/svg";
const W = 360;
const H = 356;
const M = { left: 46, right: 12, top: 12, bottom: 44 };
const PW = W - M.left - M.right; // plot width  (304)
const PH = H - M.top - M.bottom; // plot height (300)

const x = (v) => M.left + clamp01(v) * PW;
const y = (a) => M.top + (1 - clamp01(a)) * PH;

function clamp01(v) {
  return Math.min(1, Math.max(0, Number(v) || 0));
}

function el(name, attrs = {}, ...children) {
  const node = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs)) {
    if (v !== undefined && v !== null) node.setAttribute(k, String(v));
  }
  for (const child of children) {
    node.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return node;
}

let uid = 0;

/**
 * Render the plane into `container`.
 * image: {valence, arousal}; results: API results (rank = index + 1); imageUrl: preview or null.
 * Returns {highlight(rank|null)}; onHover(rank|null) and onSelect(rank) report pointer use.
 */
export function renderPlot(container, { image, results, imageUrl, imageName, target }, { onHover, onSelect } = {}) {
  const id = `va${++uid}`;
  const plotted = results
    .map((r, i) => ({ ...r, rank: i + 1 }))
    .filter((r) => Number.isFinite(r.track.valence) && Number.isFinite(r.track.arousal));

  const descId = `${id}-desc`;
  const svg = el("svg", {
    viewBox: `0 0 ${W} ${H}`,
    class: "va-plane",
    role: "group",
    "aria-labelledby": "plot-heading",
    "aria-describedby": descId,
    "data-testid": "va-plane",
  });
  const summary =
    `Your photo is at valence ${fmt.va(image.valence)}, arousal ${fmt.va(image.arousal)}` +
    ` (${fmt.mood(image.valence, image.arousal) || "unknown mood"}). ` +
    `${plotted.length} recommended song${plotted.length === 1 ? "" : "s"} plotted by their own valence and arousal.`;
  svg.append(el("desc", { id: descId }, summary));

  drawFrame(svg);

  // Links from the photo to each song: the shorter, the closer the mood.
  const links = el("g", { class: "links", "aria-hidden": "true" });
  for (const r of plotted) {
    links.append(el("line", {
      x1: x(image.valence), y1: y(image.arousal), x2: x(r.track.valence), y2: y(r.track.arousal),
      class: "link", "data-rank": r.rank,
    }));
  }
  svg.append(links);

  // Songs: markers that would overlap (each other or the photo) are moved aside to the
  // nearest free spot, keeping a small dot and a leader line at their true position.
  const ix = x(image.valence);
  const iy = y(image.arousal);
  const spots = placeMarkers(plotted.map((r) => [x(r.track.valence), y(r.track.arousal)]), [ix, iy]);
  const songs = el("g", { class: "songs" });
  const points = new Map();
  const order = plotted.map((r, i) => ({ ...r, spot: spots[i] })).reverse(); // best drawn last (on top)
  for (const r of order) {
    const tx = x(r.track.valence);
    const ty = y(r.track.arousal);
    const [px, py] = r.spot;
    if (Math.hypot(px - tx, py - ty) > 0.5) {
      songs.append(
        el("line", { x1: tx, y1: ty, x2: px, y2: py, class: "leader", "aria-hidden": "true" }),
        el("circle", { cx: tx, cy: ty, r: 2.5, class: "true-spot", "aria-hidden": "true" }),
      );
    }
    const label =
      `${r.rank}. ${fmt.trackLabel(r.track)}: valence ${fmt.va(r.track.valence)}, ` +
      `arousal ${fmt.va(r.track.arousal)}, match ${fmt.percent(r.score)}`;
    const g = el("g", {
      class: "song-point",
      role: "img",
      "aria-label": label,
      "data-testid": "plot-song-point",
      "data-rank": r.rank,
      "data-track-id": r.track.id,
      transform: `translate(${px.toFixed(1)} ${py.toFixed(1)})`,
    },
    el("title", {}, label),
    el("circle", { r: 11, class: "song-dot" }),
    el("text", { y: 4, "text-anchor": "middle", class: "song-rank", "aria-hidden": "true" }, String(r.rank)));
    g.addEventListener("mouseenter", () => onHover?.(r.rank));
    g.addEventListener("mouseleave", () => onHover?.(null));
    g.addEventListener("click", () => onSelect?.(r.rank));
    songs.append(g);
    points.set(r.rank, g);
  }
  svg.append(songs);

  // The photo: its own thumbnail in a ring, plainly different from the numbered songs.
  const imageLabel =
    `Your photo${imageName ? ` (${imageName})` : ""}: valence ${fmt.va(image.valence)}, arousal ${fmt.va(image.arousal)}`;
  const clipId = `${id}-clip`;
  const photo = el("g", {
    class: "image-point",
    role: "img",
    "aria-label": imageLabel,
    "data-testid": "plot-image-point",
    transform: `translate(${ix.toFixed(1)} ${iy.toFixed(1)})`,
  }, el("title", {}, imageLabel));
  photo.append(el("defs", {}, el("clipPath", { id: clipId }, el("circle", { r: 16 }))));
  photo.append(el("circle", { r: 16, class: "image-fill" }));
  if (imageUrl) {
    photo.append(el("image", {
      href: imageUrl, x: -16, y: -16, width: 32, height: 32,
      preserveAspectRatio: "xMidYMid slice", "clip-path": `url(#${clipId})`,
    }));
  }
  photo.append(el("circle", { r: 17, class: "image-ring" }), el("circle", { r: 20, class: "image-halo" }));
  svg.append(photo);

  // The steered target (photo + shift), when the mood was steered: a cross joined to the photo.
  if (target && Number.isFinite(target.valence) && Number.isFinite(target.arousal)) {
    const tx = x(target.valence);
    const ty = y(target.arousal);
    const label = `Mood target: valence ${fmt.va(target.valence)}, arousal ${fmt.va(target.arousal)}`;
    svg.insertBefore(el("line", { x1: ix, y1: iy, x2: tx, y2: ty, class: "target-link", "aria-hidden": "true" }), songs);
    svg.append(el("g", {
      class: "target-point", role: "img", "aria-label": label, "data-testid": "plot-target-point",
      transform: `translate(${tx.toFixed(1)} ${ty.toFixed(1)})`,
    }, el("title", {}, label), el("path", { d: "M-7 -7L7 7M-7 7L7 -7", class: "target-cross" })));
  }

  container.replaceChildren(svg);

  let current = null;
  return {
    highlight(rank) {
      if (current === rank) return;
      if (current !== null) {
        points.get(current)?.classList.remove("is-highlighted");
        svg.querySelector(`.link[data-rank="${current}"]`)?.classList.remove("is-highlighted");
      }
      current = rank;
      const point = rank === null ? null : points.get(rank);
      if (point) {
        point.classList.add("is-highlighted");
        svg.querySelector(`.link[data-rank="${rank}"]`)?.classList.add("is-highlighted");
        songs.append(point); // bring to front
      }
    },
  };
}


/** Quadrants (tinted, labelled), frame, mid-lines, ticks and axis labels. */
function drawFrame(svg) {
  // Quadrants, tinted so the four moods read at a glance.
  const cx = x(0.5);
  const cy = y(0.5);
  const quads = [
    { x: M.left, y: M.top, cls: "q-tense", label: fmt.QUADRANTS.tense, tx: M.left + 6, ty: M.top + 16, anchor: "start" },
    { x: cx, y: M.top, cls: "q-excited", label: fmt.QUADRANTS.excited, tx: M.left + PW - 6, ty: M.top + 16, anchor: "end" },
    { x: M.left, y: cy, cls: "q-sad", label: fmt.QUADRANTS.sad, tx: M.left + 6, ty: M.top + PH - 8, anchor: "start" },
    { x: cx, y: cy, cls: "q-calm", label: fmt.QUADRANTS.calm, tx: M.left + PW - 6, ty: M.top + PH - 8, anchor: "end" },
  ];
  const back = el("g", { class: "quadrants", "aria-hidden": "true" });
  for (const q of quads) {
    back.append(el("rect", { x: q.x, y: q.y, width: PW / 2, height: PH / 2, class: `quad ${q.cls}` }));
  }
  for (const q of quads) {
    back.append(el("text", { x: q.tx, y: q.ty, "text-anchor": q.anchor, class: "quad-label", "data-testid": "quadrant-label" }, q.label));
  }
  svg.append(back);

  // Axes, ticks and their labels.
  const axes = el("g", { class: "axes", "aria-hidden": "true" });
  axes.append(
    el("rect", { x: M.left, y: M.top, width: PW, height: PH, class: "frame" }),
    el("line", { x1: cx, y1: M.top, x2: cx, y2: M.top + PH, class: "midline" }),
    el("line", { x1: M.left, y1: cy, x2: M.left + PW, y2: cy, class: "midline" }),
  );
  for (const t of [0, 0.5, 1]) {
    axes.append(
      el("text", { x: x(t), y: M.top + PH + 15, "text-anchor": "middle", class: "tick" }, String(t)),
      el("text", { x: M.left - 6, y: y(t) + 4, "text-anchor": "end", class: "tick" }, String(t)),
    );
  }
  axes.append(
    el("text", { x: M.left + PW / 2, y: H - 8, "text-anchor": "middle", class: "axis-label", "data-testid": "axis-valence" },
      "valence: unpleasant → pleasant"),
    el("text", {
      x: 0, y: 0, "text-anchor": "middle", class: "axis-label", "data-testid": "axis-arousal",
      transform: `translate(14 ${M.top + PH / 2}) rotate(-90)`,
    }, "arousal: calm → excited"),
  );
  svg.append(axes);
}

const SONG_R = 11;
const PHOTO_R = 21;

/**
 * Greedy label placement: each marker (best rank first) takes its true position if free, else
 * the nearest free spot on growing rings around it, inside the plot area.
 */
function placeMarkers(targets, photo) {
  const taken = [[photo[0], photo[1], PHOTO_R]];
  const free = (px, py) =>
    px >= M.left + SONG_R && px <= M.left + PW - SONG_R && py >= M.top + SONG_R && py <= M.top + PH - SONG_R &&
    taken.every(([qx, qy, qr]) => Math.hypot(px - qx, py - qy) >= qr + SONG_R + 1);
  return targets.map(([tx, ty]) => {
    let spot = [tx, ty];
    if (!free(tx, ty)) {
      search: for (let ring = 1; ring <= 12; ring += 1) {
        const radius = ring * 8;
        const steps = 8 * ring;
        for (let k = 0; k < steps; k += 1) {
          const angle = -Math.PI / 4 + (2 * Math.PI * k) / steps;
          const px = tx + radius * Math.cos(angle);
          const py = ty + radius * Math.sin(angle);
          if (free(px, py)) {
            spot = [px, py];
            break search;
          }
        }
      }
    }
    taken.push([spot[0], spot[1], SONG_R]);
    return spot;
  });
}

/**
 * The album's arc: photos in order (numbered rings joined by a line) and each photo's song
 * (a small square joined to its photo). entries: /playlist entries.
 */
export function renderArc(container, entries) {
  const svg = el("svg", {
    viewBox: `0 0 ${W} ${H}`, class: "va-plane", role: "group",
    "aria-label": `Mood arc of ${entries.length} photos and their songs`, "data-testid": "arc-plane",
  });
  drawFrame(svg);
  const pts = entries.map((e) => [x(e.image.valence), y(e.image.arousal)]);
  svg.append(el("polyline", {
    points: pts.map(([px, py]) => `${px.toFixed(1)},${py.toFixed(1)}`).join(" "),
    class: "arc-line", "data-testid": "arc-line", "aria-hidden": "true",
  }));
  entries.forEach((e, i) => {
    const song = e.why?.song;
    if (song) {
      const sx = x(song.valence);
      const sy = y(song.arousal);
      const label = `Song ${i + 1}: ${fmt.trackLabel(e.track)}, valence ${fmt.va(song.valence)}, arousal ${fmt.va(song.arousal)}`;
      svg.append(
        el("line", { x1: pts[i][0], y1: pts[i][1], x2: sx, y2: sy, class: "link", "aria-hidden": "true" }),
        el("g", {
          class: "arc-song", role: "img", "aria-label": label, "data-testid": "arc-song-point",
          transform: `translate(${sx.toFixed(1)} ${sy.toFixed(1)})`,
        }, el("title", {}, label), el("rect", { x: -5, y: -5, width: 10, height: 10, class: "song-dot" })),
      );
    }
  });
  entries.forEach((e, i) => {
    const label = `Photo ${i + 1}${e.filename ? ` (${e.filename})` : ""}: valence ${fmt.va(e.image.valence)}, arousal ${fmt.va(e.image.arousal)}`;
    svg.append(el("g", {
      class: "arc-photo", role: "img", "aria-label": label, "data-testid": "arc-photo-point",
      transform: `translate(${pts[i][0].toFixed(1)} ${pts[i][1].toFixed(1)})`,
    }, el("title", {}, label), el("circle", { r: 10, class: "image-ring" }),
    el("text", { y: 4, "text-anchor": "middle", class: "song-rank", "aria-hidden": "true" }, String(i + 1))));
  });
  container.replaceChildren(svg);
}
