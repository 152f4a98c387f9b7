// tidegate console: live refresh from the watch stream, and the charts. No inline script
// anywhere (the Content-Security-Policy forbids it): everything the pages do is here.
"use strict";

(function () {
  function live() {
    var target = document.getElementById("instances");
    if (!target || !document.body.hasAttribute("data-live") || !window.EventSource) return;
    var timer = null;
    function kick() {
      clearTimeout(timer);
      timer = setTimeout(function () { htmx.trigger(target, "refresh"); }, 100);
    }
    var stream = new EventSource("/console/watch");
    ["instance", "snapshot", "rule", "message"].forEach(function (name) { stream.addEventListener(name, kick); });
  }

  var COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"];

  function chart(figure) {
    var service = figure.dataset.service;
    var metric = figure.dataset.metric;
    var tags = JSON.parse(figure.dataset.tags || '[""]');
    var plot = null;
    function load() {
      var now = Date.now() / 1000;
      var requests = tags.map(function (tag) {
        var query = new URLSearchParams({ service: service, tag: tag, from: String(now - 300), to: String(now), step: "5" });
        return fetch("/console/api/metrics?" + query.toString(), { credentials: "same-origin" }).then(function (r) { return r.json(); });
      });
      Promise.all(requests).then(function (answers) {
        if (!answers.length || !answers[0].t) return;
        var data = [answers[0].t].concat(answers.map(function (a) { return a[metric]; }));
        if (plot) { plot.setData(data); return; }
        var series = [{}].concat(tags.map(function (tag, i) {
          return { label: tag || "base", stroke: COLOURS[i % COLOURS.length], width: 2, spanGaps: true };
        }));
        plot = new uPlot({ width: 420, height: 180, series: series, scales: { x: { time: true } } }, data, figure);
        figure.dataset.ready = "1";
      }).catch(function () { /* the next round tries again */ });
    }
    load();
    setInterval(load, 5000);
  }

  document.addEventListener("DOMContentLoaded", function () {
    live();
    document.querySelectorAll("figure.chart").forEach(chart);
  });
})();
