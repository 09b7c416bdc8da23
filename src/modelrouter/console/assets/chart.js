// Small SVG charts drawn from plain JavaScript (no library, nothing inline: the console's CSP allows neither).
//
//   lineChart(container, series, options) -> the <svg> element (also put into container, replacing its content)
//   barChart(container, series, options)  -> the same, bars grouped by x (one bar per series at each x)
//
// series:  [{label: "key a", points: [[x, y], …]}, …] — x and y numbers (for a time axis: unix seconds or
//          milliseconds, with options.xFormat to print them); a series may have its own `color`, else it takes
//          the next one of PALETTE by its index.
// options (all optional):
//   width, height    the viewBox size (default 640 × 240); the svg scales to its container's width (CSS)
//   xFormat(x)       the text of an x tick (default: the number); barChart labels every distinct x with it
//   yFormat(y)       the text of a y tick (default: the number, up to 2 decimals)
//   xTicks, yTicks   about how many ticks (default 6 and 5)
//   yMin             the bottom of the y axis (default 0; the top is the largest y, rounded up to a nice tick)
//   title            the svg's accessible name (<title>)
//   legend           false: no legend (default: a legend with every series' label and colour)
//   empty            the text shown when there is no point at all (default "—")
// The svg has class "chart" (and "line-chart"/"bar-chart"); each series' group has class "series" and
// data-series="<index>", each bar/point data-x and data-y, so tests and styles can find them.
"use strict";

export const PALETTE = ["#2f6fdf", "#e0772b", "#2e9d5b", "#c23b3b", "#8a55c9", "#8c6d3f", "#d45aa5", "#6b7280",
  "#a8a32b", "#1fa3b8"];

const NS = "http://www.w3.org/2000/svg";
const MARGIN = { top: 10, right: 12, bottom: 26, left: 52 };

function svgEl(tag, attributes, ...children) {
  const node = document.createElementNS(NS, tag);
  for (const [name, value] of Object.entries(attributes || {})) {
    if (value === undefined || value === null) continue;
    if (name === "class") node.setAttribute("class", value);
    else if (name === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(name, String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null) continue;
    node.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return node;
}

export function seriesColor(series, index) {
  return series.color || PALETTE[index % PALETTE.length];
}

// "Nice" tick values from lo to hi (1, 2, 2.5, 5 × a power of ten apart), about `count` of them.
export function niceTicks(lo, hi, count) {
  if (!(hi > lo)) hi = lo + 1;
  const raw = (hi - lo) / Math.max(1, count);
  const power = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * power).find((s) => s >= raw) || 10 * power;
  const ticks = [];
  for (let v = Math.floor(lo / step) * step; v <= hi + step * 1e-9; v += step) ticks.push(Number(v.toPrecision(12)));
  if (ticks[ticks.length - 1] < hi) ticks.push(Number((ticks[ticks.length - 1] + step).toPrecision(12)));
  return ticks;
}

function defaultFormat(value) {
  return Number(value).toLocaleString(undefined, { maximumFractionDigits: 2 });
}

function frame(kind, options) {
  const width = options.width || 640;
  const height = options.height || 240;
  const svg = svgEl("svg", { class: "chart " + kind, viewBox: `0 0 ${width} ${height}`, role: "img",
    preserveAspectRatio: "xMidYMid meet" });
  if (options.title) svg.appendChild(svgEl("title", {}, options.title));
  return { svg, width, height, plotW: width - MARGIN.left - MARGIN.right, plotH: height - MARGIN.top - MARGIN.bottom };
}

function yAxis(f, options, maxY) {
  const yFormat = options.yFormat || defaultFormat;
  const yMin = options.yMin ?? 0;
  const ticks = niceTicks(yMin, Math.max(maxY, yMin + (maxY > yMin ? 0 : 1)), options.yTicks || 5);
  const top = ticks[ticks.length - 1];
  const scale = (y) => MARGIN.top + f.plotH - ((y - yMin) / (top - yMin || 1)) * f.plotH;
  const group = svgEl("g", { class: "axis y-axis" });
  for (const tick of ticks) {
    const y = scale(tick);
    group.append(
      svgEl("line", { class: "grid", x1: MARGIN.left, x2: MARGIN.left + f.plotW, y1: y, y2: y, stroke: "#e3e6ea" }),
      svgEl("text", { x: MARGIN.left - 6, y: y + 4, "text-anchor": "end", "font-size": 11, fill: "#555" },
        yFormat(tick)));
  }
  group.appendChild(svgEl("line", { x1: MARGIN.left, x2: MARGIN.left, y1: MARGIN.top, y2: MARGIN.top + f.plotH,
    stroke: "#888" }));
  f.svg.appendChild(group);
  return scale;
}

function xAxisLine(f) {
  const y = MARGIN.top + f.plotH;
  return svgEl("line", { x1: MARGIN.left, x2: MARGIN.left + f.plotW, y1: y, y2: y, stroke: "#888" });
}

function xLabel(f, x, text) {
  return svgEl("text", { x, y: MARGIN.top + f.plotH + 16, "text-anchor": "middle", "font-size": 11, fill: "#555" }, text);
}

function legend(series, options) {
  if (options.legend === false) return null;
  const list = document.createElement("ul");
  list.className = "chart-legend";
  series.forEach((one, index) => {
    const item = document.createElement("li");
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.backgroundColor = seriesColor(one, index);
    item.append(swatch, document.createTextNode(String(one.label)));
    list.appendChild(item);
  });
  return list;
}

function place(container, f, series, options, hasPoints) {
  if (!hasPoints) {
    f.svg.appendChild(svgEl("text", { class: "chart-empty", x: f.width / 2, y: f.height / 2, "text-anchor": "middle",
      fill: "#888" }, options.empty || "—"));
  }
  const box = document.createElement("div");
  box.className = "chart-box";
  box.appendChild(f.svg);
  const list = legend(series, options);
  if (list) box.appendChild(list);
  container.replaceChildren(box);
  return f.svg;
}

export function lineChart(container, series, options = {}) {
  const f = frame("line-chart", options);
  const points = series.flatMap((one) => one.points);
  const xs = points.map((p) => p[0]);
  const maxY = points.reduce((m, p) => Math.max(m, p[1]), 0);
  const scaleY = yAxis(f, options, maxY);
  const lo = Math.min(...xs), hi = Math.max(...xs);
  const scaleX = (x) => MARGIN.left + (hi > lo ? ((x - lo) / (hi - lo)) * f.plotW : f.plotW / 2);
  const xFormat = options.xFormat || defaultFormat;
  const axis = svgEl("g", { class: "axis x-axis" }, xAxisLine(f));
  if (points.length) {
    const ticks = hi > lo ? niceTicks(lo, hi, options.xTicks || 6).filter((x) => x >= lo && x <= hi) : [lo];
    for (const tick of ticks) {
      axis.appendChild(xLabel(f, scaleX(tick), xFormat(tick)));
    }
  }
  f.svg.appendChild(axis);
  series.forEach((one, index) => {
    const color = seriesColor(one, index);
    const sorted = [...one.points].sort((a, b) => a[0] - b[0]);
    const group = svgEl("g", { class: "series", dataset: { series: String(index) } });
    if (sorted.length > 1) {
      group.appendChild(svgEl("polyline", { fill: "none", stroke: color, "stroke-width": 2,
        points: sorted.map((p) => scaleX(p[0]).toFixed(1) + "," + scaleY(p[1]).toFixed(1)).join(" ") }));
    }
    for (const [x, y] of sorted) {
      group.appendChild(svgEl("circle", { cx: scaleX(x).toFixed(1), cy: scaleY(y).toFixed(1), r: 3, fill: color,
        dataset: { x: String(x), y: String(y) } }, svgEl("title", {}, one.label + ": " + xFormat(x) + " → " +
        (options.yFormat || defaultFormat)(y))));
    }
    f.svg.appendChild(group);
  });
  return place(container, f, series, options, points.length > 0);
}

export function barChart(container, series, options = {}) {
  const f = frame("bar-chart", options);
  const points = series.flatMap((one) => one.points);
  const xs = [...new Set(points.map((p) => p[0]))].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  const maxY = points.reduce((m, p) => Math.max(m, p[1]), 0);
  const scaleY = yAxis(f, options, maxY);
  const xFormat = options.xFormat || defaultFormat;
  const slot = f.plotW / Math.max(1, xs.length);
  const barW = Math.max(1, (slot * 0.8) / Math.max(1, series.length));
  const axis = svgEl("g", { class: "axis x-axis" }, xAxisLine(f));
  // Labels thin out when there are more x values than fit (about one per 60 units of width).
  const every = Math.max(1, Math.ceil(xs.length / Math.max(1, Math.floor(f.plotW / 60))));
  xs.forEach((x, i) => {
    if (i % every) return;
    axis.appendChild(xLabel(f, MARGIN.left + slot * (i + 0.5), xFormat(x)));
  });
  f.svg.appendChild(axis);
  const base = scaleY(options.yMin ?? 0);
  series.forEach((one, index) => {
    const color = seriesColor(one, index);
    const group = svgEl("g", { class: "series", dataset: { series: String(index) } });
    for (const [x, y] of one.points) {
      const i = xs.indexOf(x);
      const top = scaleY(y);
      group.appendChild(svgEl("rect", {
        x: (MARGIN.left + slot * i + slot * 0.1 + barW * index).toFixed(1), y: Math.min(top, base).toFixed(1),
        width: barW.toFixed(1), height: Math.abs(base - top).toFixed(1), fill: color,
        dataset: { x: String(x), y: String(y) },
      }, svgEl("title", {}, one.label + ": " + xFormat(x) + " → " + (options.yFormat || defaultFormat)(y))));
    }
    f.svg.appendChild(group);
  });
  return place(container, f, series, options, points.length > 0);
}
