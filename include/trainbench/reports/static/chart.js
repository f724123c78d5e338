/* trainbench's charts: self-contained SVG, no library, works offline (the Benchmarks page serves this file,
 * each run's report.html holds a copy inline).
 *
 * Reads the JSON in <script id="chart-data"> ({runs: [{run, date}], charts: [...]}) and draws data.charts[i] into
 * each <figure class="chart" data-index="i">, by its kind:
 *   history  {title, series: [{label, env_key, points: [{x (index into runs), y, lo, hi, n, ips, verdicts?}]}]}:
 *            one line per environment, min-max bars, regressions (▲) and improvements (▼) marked; hover shows a
 *            point's values; drag across the plot to zoom into a range of runs; double-click resets.
 *   bars     {title, axis, unit, digits, categories, series: [{label, values, notes?, color?}], stacked,
 *            reference?}: one row per category, a bar per series (stacked: their segments end to end), a dashed
 *            line at the reference; hover shows a category's values.
 */
(function () {
  "use strict";
  var NS = "http://www.w3.org/2000/svg";
  var COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2"];
  var source = document.getElementById("chart-data");
  if (!source) return;
  var data = JSON.parse(source.textContent);

  function el(name, attrs, parent) {
    var node = document.createElementNS(NS, name);
    for (var k in attrs) node.setAttribute(k, attrs[k]);
    if (parent) parent.appendChild(node);
    return node;
  }

  function niceTicks(lo, hi, count) {
    var span = hi - lo || Math.abs(hi) || 1;
    var step = Math.pow(10, Math.floor(Math.log10(span / count)));
    var err = span / count / step;
    step *= err >= 7.5 ? 10 : err >= 3.5 ? 5 : err >= 1.5 ? 2 : 1;
    var ticks = [];
    for (var t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) ticks.push(+t.toFixed(10));
    return ticks;
  }

  function fmt(v, digits) {
    if (v === null || v === undefined) return "–";
    return Number(v).toLocaleString("en-US", {minimumFractionDigits: digits, maximumFractionDigits: digits});
  }

  function escapeHtml(text) {
    return String(text).replace(/[&<>"']/g, function (c) {
      return {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c];
    });
  }

  function verdictText(v) {
    var change = v.change === null || v.change === undefined ? "" : " " + (v.change * 100).toFixed(1) + " %";
    var metric = {wall_s: "wall time", images_per_s: "images/s"}[v.metric] || v.metric;
    return metric + " " + v.verdict + change;
  }

  function color(series, i) {
    return series.color || COLORS[i % COLORS.length];
  }

  /* What every chart has: its figure, a tooltip and a legend (one key per series). */
  function setUp(chart, figure, spec) {
    chart.figure = figure;
    chart.spec = spec;
    chart.plot = figure.querySelector(".plot");
    chart.tip = document.createElement("div");
    chart.tip.className = "tooltip";
    chart.tip.hidden = true;
    figure.appendChild(chart.tip);
    var box = figure.querySelector(".legend");
    if (spec.kind === "bars" && spec.series.length < 2) return;
    spec.series.forEach(function (s, i) {
      var item = document.createElement("span");
      item.className = "key";
      item.innerHTML = '<i style="background:' + color(s, i) + '"></i>';
      item.appendChild(document.createTextNode(s.label));
      box.appendChild(item);
    });
  }

  function toSvg(chart, event) {
    var box = chart.svg.getBoundingClientRect();
    return {x: (event.clientX - box.left) / box.width * chart.W, y: (event.clientY - box.top) / box.height * chart.H};
  }

  function showTip(chart, lines, event) {
    chart.tip.innerHTML = lines.join("<br>");
    chart.tip.hidden = false;
    var box = chart.figure.getBoundingClientRect();
    chart.tip.style.left = Math.min(event.clientX - box.left + 12, box.width - 240) + "px";
    chart.tip.style.top = (event.clientY - box.top + 12) + "px";
  }

  /* --- history: median wall time per run, one line per environment ------------------------------------------ */

  function History(figure, spec) {
    setUp(this, figure, spec);
    this.W = 560;
    this.H = 260;
    var xs = [];
    spec.series.forEach(function (s) { s.points.forEach(function (p) { if (xs.indexOf(p.x) < 0) xs.push(p.x); }); });
    this.xs = xs.sort(function (a, b) { return a - b; });  // the runs this case was in: the only ones its axis names
    this.full = [xs[0], xs[xs.length - 1]];
    this.domain = this.full.slice();
    this.draw();
    this.listen();
  }

  History.prototype.visible = function (p) {
    return p.x >= this.domain[0] - 1e-9 && p.x <= this.domain[1] + 1e-9;
  };

  History.prototype.draw = function () {
    var self = this, W = this.W, H = this.H, M = {left: 56, right: 14, top: 12, bottom: 40};
    this.plot.textContent = "";
    var svg = el("svg", {viewBox: "0 0 " + W + " " + H, class: "chart history", role: "img"}, this.plot);
    this.svg = svg;
    var lo = Infinity, hi = -Infinity;
    this.spec.series.forEach(function (s) {
      s.points.forEach(function (p) {
        if (!self.visible(p)) return;
        lo = Math.min(lo, p.lo, p.y);
        hi = Math.max(hi, p.hi, p.y);
      });
    });
    if (lo === Infinity) { lo = 0; hi = 1; }
    var pad = (hi - lo) * 0.1 || Math.abs(hi) * 0.05 || 1;
    var yTicks = niceTicks(Math.max(0, lo - pad), hi + pad, 5);
    var y0 = Math.min(yTicks[0], lo), y1 = Math.max(yTicks[yTicks.length - 1], hi);
    var x0 = this.domain[0], x1 = this.domain[1];
    if (x0 === x1) { x0 -= 1; x1 += 1; }  // a single run sits in the middle
    var pw = W - M.left - M.right, ph = H - M.top - M.bottom;
    this.sx = function (x) { return M.left + (x - x0) / (x1 - x0) * pw; };
    this.ix = function (px) { return x0 + (px - M.left) / pw * (x1 - x0); };
    var sy = function (y) { return M.top + (1 - (y - y0) / (y1 - y0)) * ph; };
    var axes = el("g", {class: "axes"}, svg);
    yTicks.forEach(function (t) {
      el("line", {x1: M.left, x2: W - M.right, y1: sy(t), y2: sy(t), class: "grid"}, axes);
      el("text", {x: M.left - 6, y: sy(t) + 4, "text-anchor": "end"}, axes).textContent = t;
    });
    var inView = this.xs.filter(function (x) { return x >= x0 && x <= x1 && x < data.runs.length; });
    var step = Math.max(1, Math.ceil(inView.length / 6));
    var shownRuns = inView.filter(function (x, k) { return k % step === 0; });
    var days = shownRuns.map(function (i) { return data.runs[i].date.slice(0, 10); });
    var sameDay = days.some(function (d, i) { return days.indexOf(d) !== i; });
    shownRuns.forEach(function (i, k) {
      var px = self.sx(i);
      var anchor = W - M.right - px < 30 ? "end" : "middle";  // the left margin holds half a label, the right not
      el("line", {x1: px, x2: px, y1: H - M.bottom, y2: H - M.bottom + 4, class: "tick"}, axes);
      el("text", {x: px, y: H - M.bottom + 16, "text-anchor": anchor}, axes).textContent =
        sameDay ? data.runs[i].date.slice(5, 16) : days[k];
    });
    el("text", {x: 12, y: M.top + ph / 2, transform: "rotate(-90 12 " + (M.top + ph / 2) + ")",
      "text-anchor": "middle", class: "label"}, axes).textContent = "wall s (median)";
    el("text", {x: M.left + pw / 2, y: H - 4, "text-anchor": "middle", class: "label"}, axes).textContent =
      "run (oldest → newest)";
    el("rect", {x: M.left, y: M.top, width: pw, height: ph, class: "frame"}, axes);
    var clipId = "clip-" + this.figure.dataset.index;
    el("rect", {x: M.left - 6, y: M.top - 6, width: pw + 12, height: ph + 12},
      el("clipPath", {id: clipId}, el("defs", {}, svg)));
    var layer = el("g", {"clip-path": "url(#" + clipId + ")"}, svg);
    this.points = [];
    this.spec.series.forEach(function (s, i) {
      var stroke = color(s, i);
      var g = el("g", {class: "series", "data-env": s.env_key}, layer);
      var shown = s.points.filter(function (p) { return self.visible(p); });
      if (shown.length > 1) {
        el("polyline", {points: shown.map(function (p) { return self.sx(p.x) + "," + sy(p.y); }).join(" "),
          stroke: stroke, class: "line"}, g);
      }
      shown.forEach(function (p) {
        var cx = self.sx(p.x), cy = sy(p.y);
        if (p.n > 1) el("line", {x1: cx, x2: cx, y1: sy(p.lo), y2: sy(p.hi), stroke: stroke, class: "range"}, g);
        el("circle", {cx: cx, cy: cy, r: 3.5, fill: stroke, class: "pt", "data-run": data.runs[p.x].run}, g);
        (p.verdicts || []).forEach(function (v) {
          if (v.metric !== "wall_s" && v.metric !== "images_per_s") return;
          var up = v.verdict === "regressed";
          var yy = up ? cy - 10 : cy + 10, d = up ? -6 : 6;
          el("path", {d: "M" + (cx - 5) + "," + (yy - d / 2) + " L" + (cx + 5) + "," + (yy - d / 2) + " L" + cx +
            "," + (yy + d / 2) + " Z", class: "mark " + v.verdict}, g);
        });
        self.points.push({p: p, series: s, color: stroke, cx: cx, cy: cy});
      });
    });
    this.hover = el("circle", {r: 6, class: "hover", visibility: "hidden"}, svg);
    this.band = el("rect", {y: M.top, height: ph, class: "band", visibility: "hidden"}, svg);
    this.zoomed = this.domain[0] !== this.full[0] || this.domain[1] !== this.full[1];
    this.figure.classList.toggle("zoomed", this.zoomed);
  };

  History.prototype.nearest = function (at) {
    var best = null, dist = Infinity;
    this.points.forEach(function (q) {
      var d = Math.pow(q.cx - at.x, 2) + Math.pow(q.cy - at.y, 2) / 4;
      if (d < dist) { dist = d; best = q; }
    });
    return dist < 40 * 40 ? best : null;
  };

  History.prototype.show = function (q, event) {
    if (!q) { this.tip.hidden = true; this.hover.setAttribute("visibility", "hidden"); return; }
    var p = q.p, run = data.runs[p.x] || {};
    var lines = [
      "<b>" + escapeHtml(run.run) + "</b>", escapeHtml(run.date || ""), escapeHtml(q.series.label),
      "wall " + fmt(p.y, 2) + " s" + (p.n > 1 ? " (min " + fmt(p.lo, 2) + ", max " + fmt(p.hi, 2) + ")" : ""),
      p.n + " repeat" + (p.n === 1 ? "" : "s") + (p.ips ? " · " + fmt(p.ips, 0) + " images/s" : "")
    ];
    (p.verdicts || []).forEach(function (v) {
      lines.push('<span class="' + v.verdict + '">' + escapeHtml(verdictText(v)) + "</span>");
    });
    showTip(this, lines, event);
    this.hover.setAttribute("cx", q.cx);
    this.hover.setAttribute("cy", q.cy);
    this.hover.setAttribute("stroke", q.color);
    this.hover.setAttribute("visibility", "visible");
  };

  History.prototype.zoom = function (a, b) {
    var lo = Math.max(this.full[0], Math.ceil(Math.min(a, b) - 1e-9));
    var hi = Math.min(this.full[1], Math.floor(Math.max(a, b) + 1e-9));
    if (hi < lo) return;
    this.domain = [lo, hi];
    this.draw();
  };

  History.prototype.reset = function () {
    this.domain = this.full.slice();
    this.draw();
  };

  History.prototype.listen = function () {
    var self = this, start = null;
    this.plot.addEventListener("mousedown", function (e) {
      if (e.button !== 0) return;
      start = toSvg(self, e).x;
      e.preventDefault();
    });
    window.addEventListener("mousemove", function (e) {
      if (start === null) return;
      var x = toSvg(self, e).x;
      self.band.setAttribute("x", Math.min(start, x));
      self.band.setAttribute("width", Math.abs(x - start));
      self.band.setAttribute("visibility", "visible");
    });
    window.addEventListener("mouseup", function (e) {
      if (start === null) return;
      var end = toSvg(self, e).x, from = start;
      start = null;
      self.band.setAttribute("visibility", "hidden");
      if (Math.abs(end - from) > 6) self.zoom(self.ix(from), self.ix(end));
    });
    this.plot.addEventListener("mousemove", function (e) {
      if (start === null) self.show(self.nearest(toSvg(self, e)), e);
    });
    this.plot.addEventListener("mouseleave", function () { self.show(null); });
    this.plot.addEventListener("dblclick", function () { self.reset(); });
  };

  /* --- bars: one value per category and series, one row per category (long labels stay readable) -------- */

  function Bars(figure, spec) {
    setUp(this, figure, spec);
    var longest = Math.max.apply(null, spec.categories.map(function (c) { return c.length; }));
    this.M = {left: Math.min(260, 16 + 5.6 * longest), right: 16, top: 8, bottom: 36};
    this.row = spec.stacked ? 24 : Math.max(24, 10 * spec.series.length + 10);
    this.W = 560;
    this.H = this.M.top + this.M.bottom + this.row * spec.categories.length;
    this.draw();
    this.listen();
  }

  Bars.prototype.draw = function () {
    var self = this, spec = this.spec, M = this.M, W = this.W, H = this.H, row = this.row;
    var svg = el("svg", {viewBox: "0 0 " + W + " " + H, class: "chart bars", role: "img"}, this.plot);
    this.svg = svg;
    var pw = W - M.left - M.right, ph = H - M.top - M.bottom;
    var ends = spec.categories.map(function (_, i) {
      var values = spec.series.map(function (s) { return s.values[i] || 0; });
      return spec.stacked ? values.reduce(function (a, b) { return a + b; }, 0) : Math.max.apply(null, values);
    });
    var hi = Math.max.apply(null, ends.concat([spec.reference || 0])) || 1;
    var ticks = niceTicks(0, hi * 1.05, 5);
    var x1 = Math.max(ticks[ticks.length - 1], hi);
    var sx = function (v) { return M.left + v / x1 * pw; };
    var axes = el("g", {class: "axes"}, svg);
    ticks.forEach(function (t) {
      el("line", {x1: sx(t), x2: sx(t), y1: M.top, y2: H - M.bottom, class: "grid"}, axes);
      el("text", {x: sx(t), y: H - M.bottom + 14, "text-anchor": "middle"}, axes).textContent =
        t.toLocaleString("en-US");
    });
    el("text", {x: M.left + pw / 2, y: H - 4, "text-anchor": "middle", class: "label"}, axes).textContent = spec.axis;
    this.highlight = el("rect", {x: M.left, width: pw, height: row, class: "column", visibility: "hidden"}, svg);
    var layer = el("g", {class: "values"}, svg);
    var height = spec.stacked ? row * 0.6 : (row - 8) / spec.series.length;
    spec.categories.forEach(function (label, i) {
      var top = M.top + i * row, base = 0;
      spec.series.forEach(function (s, k) {
        var v = s.values[i];
        if (v === null || v === undefined) return;
        var from = spec.stacked ? base : 0;
        el("rect", {x: sx(from), width: Math.max(1, sx(from + v) - sx(from)), height: Math.max(1, height - 1),
          y: spec.stacked ? top + row * 0.2 : top + 4 + k * height,
          fill: color(s, k), class: "bar", "data-category": i, "data-value": v}, layer);
        if (spec.stacked) base += v;
      });
      el("text", {x: M.left - 6, y: top + row / 2 + 4, "text-anchor": "end"}, axes).textContent = label;
    });
    if (spec.reference !== null && spec.reference !== undefined) {
      el("line", {x1: sx(spec.reference), x2: sx(spec.reference), y1: M.top, y2: H - M.bottom, class: "ref"}, svg);
    }
    el("rect", {x: M.left, y: M.top, width: pw, height: ph, class: "frame"}, axes);
  };

  Bars.prototype.show = function (i, event) {
    var spec = this.spec;
    if (i === null) { this.tip.hidden = true; this.highlight.setAttribute("visibility", "hidden"); return; }
    var total = 0;
    var lines = ["<b>" + escapeHtml(spec.categories[i]) + "</b>"];
    spec.series.forEach(function (s) {
      var v = s.values[i];
      if (v === null || v === undefined) return;
      total += v;
      var note = s.notes && s.notes[i] ? " (" + s.notes[i] + ")" : "";
      var name = spec.series.length > 1 ? s.label + ": " : "";
      lines.push(escapeHtml(name + fmt(v, spec.digits) + " " + spec.unit + note));
    });
    if (spec.stacked && spec.series.length > 1) lines.push("total " + escapeHtml(fmt(total, spec.digits) + " " + spec.unit));
    showTip(this, lines, event);
    this.highlight.setAttribute("y", this.M.top + i * this.row);
    this.highlight.setAttribute("visibility", "visible");
  };

  Bars.prototype.listen = function () {
    var self = this;
    this.plot.addEventListener("mousemove", function (e) {
      var i = Math.floor((toSvg(self, e).y - self.M.top) / self.row);
      self.show(i >= 0 && i < self.spec.categories.length ? i : null, e);
    });
    this.plot.addEventListener("mouseleave", function () { self.show(null); });
  };

  var charts = [];
  document.querySelectorAll("figure.chart").forEach(function (figure) {
    var spec = data.charts[+figure.dataset.index];
    charts.push(spec.kind === "bars" ? new Bars(figure, spec) : new History(figure, spec));
  });
  window.trainbenchCharts = charts;  // for tests and the console: charts[i].zoom(a, b), .reset() on a history
  document.body.setAttribute("data-charts-rendered", String(charts.length));
})();
