/* History charts of the Benchmarks page: self-contained SVG, no library, works offline.
 *
 * Reads the JSON in <script id="history-data"> ({runs: [{run, date}], charts: [{title, series: [{label,
 * points: [{x (index into runs), y, lo, hi, n, ips, verdicts?}]}]}]}) and draws one chart per <figure class="chart">:
 * one line per environment, min-max bars, regressions (▲) and improvements (▼) marked.
 * Hover shows a point's values; drag across the plot to zoom into a range of runs; double-click resets.
 */
(function () {
  "use strict";
  var NS = "http://www.w3.org/2000/svg";
  var COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2"];
  var W = 560, H = 260, M = {left: 56, right: 14, top: 12, bottom: 40};
  var source = document.getElementById("history-data");
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
    return v === null || v === undefined ? "–" : Number(v).toFixed(digits);
  }

  function verdictText(v) {
    var change = v.change === null || v.change === undefined ? "" : " " + (v.change * 100).toFixed(1) + " %";
    var metric = {wall_s: "wall time", images_per_s: "images/s"}[v.metric] || v.metric;
    return metric + " " + v.verdict + change;
  }

  function Chart(figure, chart) {
    this.figure = figure;
    this.chart = chart;
    var xs = [];
    chart.series.forEach(function (s) { s.points.forEach(function (p) { xs.push(p.x); }); });
    this.full = [Math.min.apply(null, xs), Math.max.apply(null, xs)];
    this.domain = this.full.slice();
    this.plot = figure.querySelector(".plot");
    this.tip = document.createElement("div");
    this.tip.className = "tooltip";
    this.tip.hidden = true;
    figure.appendChild(this.tip);
    this.legend();
    this.draw();
    this.listen();
  }

  Chart.prototype.legend = function () {
    var box = this.figure.querySelector(".legend");
    this.chart.series.forEach(function (s, i) {
      var item = document.createElement("span");
      item.className = "key";
      item.innerHTML = '<i style="background:' + COLORS[i % COLORS.length] + '"></i>';
      item.appendChild(document.createTextNode(s.label));
      box.appendChild(item);
    });
  };

  Chart.prototype.visible = function (p) {
    return p.x >= this.domain[0] - 1e-9 && p.x <= this.domain[1] + 1e-9;
  };

  Chart.prototype.draw = function () {
    var self = this, chart = this.chart;
    this.plot.textContent = "";
    var svg = el("svg", {viewBox: "0 0 " + W + " " + H, class: "history", role: "img"}, this.plot);
    this.svg = svg;
    var lo = Infinity, hi = -Infinity;
    chart.series.forEach(function (s) {
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
    var step = Math.max(1, Math.ceil((x1 - x0 + 1) / 6));
    var shownRuns = [];
    for (var x = Math.ceil(x0); x <= x1; x += step) if (x >= 0 && x < data.runs.length) shownRuns.push(x);
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
    chart.series.forEach(function (s, i) {
      var color = COLORS[i % COLORS.length];
      var g = el("g", {class: "series", "data-env": s.env_key}, layer);
      var shown = s.points.filter(function (p) { return self.visible(p); });
      if (shown.length > 1) {
        el("polyline", {points: shown.map(function (p) { return self.sx(p.x) + "," + sy(p.y); }).join(" "),
          stroke: color, class: "line"}, g);
      }
      shown.forEach(function (p) {
        var cx = self.sx(p.x), cy = sy(p.y);
        if (p.n > 1) el("line", {x1: cx, x2: cx, y1: sy(p.lo), y2: sy(p.hi), stroke: color, class: "bar"}, g);
        el("circle", {cx: cx, cy: cy, r: 3.5, fill: color, class: "pt", "data-run": data.runs[p.x].run}, g);
        (p.verdicts || []).forEach(function (v) {
          if (v.metric !== "wall_s" && v.metric !== "images_per_s") return;
          var up = v.verdict === "regressed";
          var yy = up ? cy - 10 : cy + 10, d = up ? -6 : 6;
          el("path", {d: "M" + (cx - 5) + "," + (yy - d / 2) + " L" + (cx + 5) + "," + (yy - d / 2) + " L" + cx +
            "," + (yy + d / 2) + " Z", class: "mark " + v.verdict}, g);
        });
        self.points.push({p: p, series: s, color: color, cx: cx, cy: cy});
      });
    });
    this.hover = el("circle", {r: 6, class: "hover", visibility: "hidden"}, svg);
    this.band = el("rect", {y: M.top, height: ph, class: "band", visibility: "hidden"}, svg);
    this.zoomed = this.domain[0] !== this.full[0] || this.domain[1] !== this.full[1];
    this.figure.classList.toggle("zoomed", this.zoomed);
  };

  Chart.prototype.toSvg = function (event) {
    var box = this.svg.getBoundingClientRect();
    return {x: (event.clientX - box.left) / box.width * W, y: (event.clientY - box.top) / box.height * H};
  };

  Chart.prototype.nearest = function (at) {
    var best = null, dist = Infinity;
    this.points.forEach(function (q) {
      var d = Math.pow(q.cx - at.x, 2) + Math.pow(q.cy - at.y, 2) / 4;
      if (d < dist) { dist = d; best = q; }
    });
    return dist < 40 * 40 ? best : null;
  };

  Chart.prototype.show = function (q, event) {
    if (!q) { this.tip.hidden = true; this.hover.setAttribute("visibility", "hidden"); return; }
    var p = q.p, run = data.runs[p.x] || {};
    var lines = [
      "<b>" + escapeHtml(run.run) + "</b>", escapeHtml(run.date || ""), escapeHtml(q.series.label),
      "wall " + fmt(p.y, 2) + " s" + (p.n > 1 ? " (min " + fmt(p.lo, 2) + ", max " + fmt(p.hi, 2) + ")" : ""),
      p.n + " repeat" + (p.n === 1 ? "" : "s") + (p.ips ? " · " + Math.round(p.ips) + " images/s" : "")
    ];
    (p.verdicts || []).forEach(function (v) {
      lines.push('<span class="' + v.verdict + '">' + escapeHtml(verdictText(v)) + "</span>");
    });
    this.tip.innerHTML = lines.join("<br>");
    this.tip.hidden = false;
    var box = this.figure.getBoundingClientRect();
    this.tip.style.left = Math.min(event.clientX - box.left + 12, box.width - 240) + "px";
    this.tip.style.top = (event.clientY - box.top + 12) + "px";
    this.hover.setAttribute("cx", q.cx);
    this.hover.setAttribute("cy", q.cy);
    this.hover.setAttribute("stroke", q.color);
    this.hover.setAttribute("visibility", "visible");
  };

  Chart.prototype.zoom = function (a, b) {
    var lo = Math.max(this.full[0], Math.ceil(Math.min(a, b) - 1e-9));
    var hi = Math.min(this.full[1], Math.floor(Math.max(a, b) + 1e-9));
    if (hi < lo) return;
    this.domain = [lo, hi];
    this.draw();
  };

  Chart.prototype.reset = function () {
    this.domain = this.full.slice();
    this.draw();
  };

  Chart.prototype.listen = function () {
    var self = this, start = null;
    this.plot.addEventListener("mousedown", function (e) {
      if (e.button !== 0) return;
      start = self.toSvg(e).x;
      e.preventDefault();
    });
    window.addEventListener("mousemove", function (e) {
      if (start === null) return;
      var x = self.toSvg(e).x;
      self.band.setAttribute("x", Math.min(start, x));
      self.band.setAttribute("width", Math.abs(x - start));
      self.band.setAttribute("visibility", "visible");
    });
    window.addEventListener("mouseup", function (e) {
      if (start === null) return;
      var end = self.toSvg(e).x, from = start;
      start = null;
      self.band.setAttribute("visibility", "hidden");
      if (Math.abs(end - from) > 6) self.zoom(self.ix(from), self.ix(end));
    });
    this.plot.addEventListener("mousemove", function (e) {
      if (start === null) self.show(self.nearest(self.toSvg(e)), e);
    });
    this.plot.addEventListener("mouseleave", function () { self.show(null); });
    this.plot.addEventListener("dblclick", function () { self.reset(); });
  };

  function escapeHtml(text) {
    return String(text).replace(/[&<>"']/g, function (c) {
      return {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c];
    });
  }

  var charts = [];
  document.querySelectorAll("figure.chart").forEach(function (figure) {
    charts.push(new Chart(figure, data.charts[+figure.dataset.index]));
  });
  window.trainbenchCharts = charts;  // for tests and the console: charts[i].zoom(a, b), .reset()
  document.body.setAttribute("data-charts-rendered", String(charts.length));
})();
