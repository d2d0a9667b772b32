// The site map: an SVG in equirectangular projection (longitude and latitude
// map linearly to x and y), the world outline of world.js, one circle per
// site coloured by health, and a dashed line from each edge site to each of
// its parents. The view fits the sites (or shows the whole world); drawing
// happens in pixel units of a fixed viewBox, so circles and labels keep their
// size whatever the zoom.

import { LAND } from "./world.js";
import { fitBounds, formatLoad, siteHealth } from "./model.js";

const SVG_NS = "http://www.w3.org/2000/svg";
export const WIDTH = 800;
export const HEIGHT = 400;
const WORLD = { west: -180, east: 180, south: -90, north: 90 };

function el(name, attrs = {}, text = null) {
  const node = document.createElementNS(SVG_NS, name);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  if (text !== null) node.textContent = text;
  return node;
}

function projector(view) {
  const sx = WIDTH / (view.east - view.west);
  const sy = HEIGHT / (view.north - view.south);
  return (lon, lat) => [(lon - view.west) * sx, (view.north - lat) * sy];
}

function landPath(project) {
  return LAND.map((ring) => {
    const points = ring.map(([lon, lat]) => project(lon, lat).map((v) => v.toFixed(1)).join(","));
    return `M${points.join("L")}Z`;
  }).join("");
}

function graticule(view, project) {
  const span = view.east - view.west;
  const step = span > 180 ? 30 : span > 60 ? 10 : 5;
  const group = el("g", { class: "graticule" });
  for (let lon = Math.ceil(view.west / step) * step; lon <= view.east; lon += step) {
    const [x] = project(lon, 0);
    group.append(el("line", { x1: x, x2: x, y1: 0, y2: HEIGHT }));
  }
  for (let lat = Math.ceil(view.south / step) * step; lat <= view.north; lat += step) {
    const [, y] = project(0, lat);
    group.append(el("line", { x1: 0, x2: WIDTH, y1: y, y2: y }));
  }
  return group;
}

function linkLayer(sites, positions) {
  const group = el("g", { class: "links" });
  for (const site of sites) {
    const from = positions.get(site.metadata.name);
    for (const parent of site.spec.parents ?? []) {
      const to = positions.get(parent);
      if (!from || !to) continue;
      const line = el("line", { x1: from[0], y1: from[1], x2: to[0], y2: to[1] });
      line.dataset.from = site.metadata.name;
      line.dataset.to = parent;
      group.append(line);
    }
  }
  return group;
}

function overlaps(a, boxes) {
  return boxes.some((b) => a.x < b.x + b.w && b.x < a.x + a.w && a.y < b.y + b.h && b.y < a.y + a.h);
}

/** A label position around (x, y) clear of the boxes already placed: right, left, below, above. */
function placeLabel(x, y, r, width, boxes) {
  const h = 28;
  const candidates = [
    { x: x + r + 5, y: y - 13, anchor: "start" },
    { x: x - r - 5 - width, y: y - 13, anchor: "end" },
    { x: x - width / 2, y: y + r + 3, anchor: "middle" },
    { x: x - width / 2, y: y - r - 3 - h, anchor: "middle" },
  ];
  const free = candidates.find((c) => !overlaps({ x: c.x, y: c.y, w: width, h }, boxes)) ?? candidates[0];
  boxes.push({ x: free.x, y: free.y, w: width, h });
  const textX = free.anchor === "start" ? free.x : free.anchor === "end" ? free.x + width : free.x + width / 2;
  return { textX, top: free.y, anchor: free.anchor };
}

function siteMarker(site, stats, [x, y], selected, boxes, onSelect) {
  const name = site.metadata.name;
  const parent = site.spec.tier === "parent";
  const r = parent ? 10 : 8;
  const group = el("g", { class: `site${selected ? " selected" : ""}`, tabindex: 0, role: "button" });
  if (parent) group.append(el("circle", { class: "parent-ring", cx: x, cy: y, r: r + 5 }));
  const circle = el("circle", { class: `marker ${stats.health}`, cx: x, cy: y, r });
  Object.assign(circle.dataset, { site: name, health: stats.health, tier: site.spec.tier });
  const word = stats.reported ? "healthy" : "ready"; // Site.status.healthyNodes when the cloud wrote it
  const ready = stats.total === 0 ? "no nodes" : `${stats.reported ? stats.fit : stats.ready}/${stats.total} ${word}`;
  const counts = ready + (parent ? " · parent" : "");
  const phase = site.status?.phase ? ` · ${site.status.phase}` : "";
  const load = formatLoad(stats);
  const loadLine = load === null ? "" : `\nload ${load}`;
  circle.append(el("title", {}, `${name} (${site.spec.tier}, ${site.spec.region})${phase}\n${counts}${loadLine}`));
  group.append(circle);
  const width = Math.max(name.length * 7.2, counts.length * 6) + 4;
  const label = placeLabel(x, y, parent ? r + 5 : r, width, boxes);
  group.append(el("text", { class: "name", x: label.textX, y: label.top + 12, "text-anchor": label.anchor }, name));
  group.append(el("text", { class: "counts", x: label.textX, y: label.top + 25, "text-anchor": label.anchor }, counts));
  group.addEventListener("click", () => onSelect(name));
  group.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") onSelect(name); });
  return group;
}

/**
 * Draws the map into `svg`. `state`: {sites, bySite (name -> nodes), world
 * (bool: whole world instead of fitting the sites), selected, onSelect}.
 */
export function renderMap(svg, { sites, bySite, world, selected, onSelect }) {
  const points = sites.map((s) => s.spec.location);
  const view = world ? WORLD : fitBounds(points, WIDTH / HEIGHT);
  const project = projector(view);
  svg.setAttribute("viewBox", `0 0 ${WIDTH} ${HEIGHT}`);
  const ocean = el("rect", { class: "ocean", x: 0, y: 0, width: WIDTH, height: HEIGHT });
  const land = el("path", { class: "land", d: landPath(project) });
  const positions = new Map(sites.map((s) => [s.metadata.name, project(s.spec.location.lon, s.spec.location.lat)]));
  const boxes = [...positions.values()].map(([x, y]) => ({ x: x - 9, y: y - 9, w: 18, h: 18 }));
  // Parents first so that edge markers near them stay on top; then north to south for the labels.
  const rank = (s) => (s.spec.tier === "parent" ? 0 : 1);
  const y = (s) => positions.get(s.metadata.name)[1];
  const ordered = [...sites].sort((a, b) => rank(a) - rank(b) || y(a) - y(b));
  const markers = el("g", { class: "sites" });
  for (const site of ordered) {
    const stats = siteHealth(site, bySite.get(site.metadata.name) ?? []);
    const pos = positions.get(site.metadata.name);
    markers.append(siteMarker(site, stats, pos, selected === site.metadata.name, boxes, onSelect));
  }
  svg.replaceChildren(ocean, graticule(view, project), land, linkLayer(sites, positions), markers);
}
