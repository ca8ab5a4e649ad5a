/* A small line chart on <canvas>: the project's own, no library. LineChart(canvas, series)
   where series = [{label, color}]; push(values) appends one point per series and redraws,
   keeping the last `capacity` points. */
"use strict";
(function (global) {
  function LineChart(canvas, series, capacity) {
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d");
    this.series = series;
    this.capacity = capacity || 120;
    this.data = series.map(function () { return []; });
  }
  LineChart.prototype.push = function (values) {
    for (var i = 0; i < this.series.length; i++) {
      var v = values[i];
      this.data[i].push(typeof v === "number" && isFinite(v) ? v : null);
      if (this.data[i].length > this.capacity) this.data[i].shift();
    }
    this.draw();
  };
  LineChart.prototype.draw = function () {
    var ctx = this.ctx, w = this.canvas.width, h = this.canvas.height, pad = 24;
    ctx.clearRect(0, 0, w, h);
    var max = 0;
    this.data.forEach(function (points) {
      points.forEach(function (v) { if (v !== null && v > max) max = v; });
    });
    max = max > 0 ? max * 1.15 : 1;
    ctx.strokeStyle = "#d0d7de"; ctx.lineWidth = 1; ctx.font = "10px sans-serif";
    ctx.fillStyle = "#57606a";
    for (var g = 0; g <= 2; g++) {
      var y = pad / 2 + (h - pad) * g / 2;
      ctx.beginPath(); ctx.moveTo(pad + 8, y); ctx.lineTo(w, y); ctx.stroke();
      ctx.fillText(formatNumber(max * (2 - g) / 2), 0, y + 3);
    }
    var step = (w - pad - 8) / Math.max(this.capacity - 1, 1);
    var self = this;
    this.data.forEach(function (points, s) {
      ctx.strokeStyle = self.series[s].color; ctx.lineWidth = 2; ctx.beginPath();
      var started = false, offset = self.capacity - points.length;
      points.forEach(function (v, i) {
        if (v === null) { started = false; return; }
        var x = pad + 8 + (offset + i) * step, y = pad / 2 + (h - pad) * (1 - v / max);
        if (started) ctx.lineTo(x, y); else { ctx.moveTo(x, y); started = true; }
      });
      ctx.stroke();
      ctx.fillStyle = self.series[s].color;
      ctx.fillText(self.series[s].label, w - 70 * (self.series.length - s), h - 2);
    });
  };
  function formatNumber(v) {
    return v >= 100 ? Math.round(v).toString() : v.toFixed(v >= 10 ? 1 : 2);
  }
  global.LineChart = LineChart;
})(window);
