// Community Pulse live page: polls /v1/dashboard and redraws the charts (Chart.js, vendored).
"use strict";

(function () {
  const REFRESH_MS = 2000;
  const TIERS = ["dormant", "casual", "engaged", "champion"];
  const RISKS = ["low", "medium", "high"];
  const COLORS = {
    blue: "#2f6fde", red: "#d64545", green: "#2e9d5b", amber: "#e0a100",
    grey: "#9aa7b4", purple: "#7a4fd1", teal: "#1f9aa6",
  };
  const MODEL_COLORS = [COLORS.blue, COLORS.purple, COLORS.teal, COLORS.amber];
  const pulse = { updates: 0, errors: 0, last: null, charts: {} };
  window.pulse = pulse;

  const clock = (ms) => new Date(ms).toLocaleTimeString([], { hour12: false });
  const day = (ms) => new Date(ms).toISOString().slice(0, 10);
  const fmt = (n, digits = 0) =>
    n === null || n === undefined ? "–" : Number(n).toLocaleString(undefined, {
      maximumFractionDigits: digits, minimumFractionDigits: digits,
    });

  function chart(id, config) {
    config.options = Object.assign(
      { animation: false, responsive: true, maintainAspectRatio: false }, config.options || {});
    const made = new Chart(document.getElementById(id), config);
    pulse.charts[id] = made;
    return made;
  }

  function timeAxis(format) {
    return { type: "linear", ticks: { callback: (v) => format(v), maxTicksLimit: 6 } };
  }

  function build() {
    chart("chart-rate", {
      type: "line",
      data: { datasets: [
        { label: "events/s", data: [], borderColor: COLORS.blue, pointRadius: 0, tension: 0.2 },
        { label: "rejected/s", data: [], borderColor: COLORS.red, pointRadius: 0, tension: 0.2 },
      ] },
      options: { scales: { x: timeAxis(clock), y: { beginAtZero: true } } },
    });
    chart("chart-tiers", {
      type: "bar",
      data: { labels: TIERS, datasets: [{ label: "members", data: [],
        backgroundColor: [COLORS.grey, COLORS.teal, COLORS.blue, COLORS.green] }] },
      options: { plugins: { legend: { display: false } }, scales: { y: { beginAtZero: true } } },
    });
    chart("chart-risk", {
      type: "doughnut",
      data: { labels: RISKS, datasets: [{ data: [],
        backgroundColor: [COLORS.green, COLORS.amber, COLORS.red] }] },
    });
    chart("chart-funnel", {
      type: "bar",
      data: { labels: [], datasets: [{ label: "members", data: [], backgroundColor: COLORS.purple }] },
      options: { indexAxis: "y", plugins: { legend: { display: false } },
        scales: { x: { beginAtZero: true } } },
    });
    chart("chart-conversion", {
      type: "bar",
      data: {
        labels: Array.from({ length: 10 }, (_, i) => `${(i / 10).toFixed(1)}–${((i + 1) / 10).toFixed(1)}`),
        datasets: [{ label: "members", data: [], backgroundColor: COLORS.teal }],
      },
      options: { plugins: { legend: { display: false } }, scales: { y: { beginAtZero: true } } },
    });
    chart("chart-auc", {
      type: "line",
      data: { datasets: [] },
      options: { scales: { x: timeAxis(day), y: { suggestedMin: 0.5, suggestedMax: 1 } } },
    });
    chart("chart-freshness", {
      type: "line",
      data: { datasets: [
        { label: "p50", data: [], borderColor: COLORS.green, pointRadius: 0, spanGaps: true },
        { label: "p95", data: [], borderColor: COLORS.amber, pointRadius: 0, spanGaps: true },
      ] },
      options: { scales: { x: timeAxis(clock), y: { beginAtZero: true } } },
    });
  }

  function text(id, value) { document.getElementById(id).textContent = value; }

  function alertsTable(alerts) {
    const body = document.querySelector("#alerts tbody");
    body.replaceChildren();
    if (!alerts.length) {
      const row = body.insertRow();
      const cell = row.insertCell();
      cell.colSpan = 7; cell.className = "empty"; cell.textContent = "no alerts yet";
      return;
    }
    for (const a of alerts) {
      const row = body.insertRow();
      const cells = [a.raised_at.replace("T", " ").slice(0, 19), a.rule, a.severity, a.status,
        `${a.subject_type} ${a.subject_id.slice(0, 12)}`, fmt(a.value, 3), fmt(a.threshold, 3)];
      cells.forEach((value, i) => {
        const cell = row.insertCell();
        cell.textContent = value;
        if (i === 2) cell.className = `sev-${a.severity}`;
      });
    }
  }

  function render(d) {
    const c = pulse.charts;
    c["chart-rate"].data.datasets[0].data = d.rate.map((p) => ({ x: p.t * 1000, y: p.events_per_second }));
    c["chart-rate"].data.datasets[1].data = d.rate.map((p) => ({ x: p.t * 1000, y: p.rejected_per_second }));
    c["chart-tiers"].data.datasets[0].data = TIERS.map((t) => d.engagement_tiers[t] || 0);
    c["chart-risk"].data.datasets[0].data = RISKS.map((r) => d.churn_risk[r] || 0);
    c["chart-funnel"].data.labels = d.lifecycle.map((s) => s.stage);
    c["chart-funnel"].data.datasets[0].data = d.lifecycle.map((s) => s.members);
    c["chart-conversion"].data.datasets[0].data = d.conversion.histogram;
    const models = [...new Set(d.model_auc.map((p) => p.model))].sort();
    c["chart-auc"].data.datasets = models.map((model, i) => ({
      label: model, borderColor: MODEL_COLORS[i % MODEL_COLORS.length], pointRadius: 0,
      data: d.model_auc.filter((p) => p.model === model)
        .map((p) => ({ x: Date.parse(p.at), y: p.roc_auc })),
    }));
    c["chart-freshness"].data.datasets[0].data = d.freshness.map((p) => ({ x: p.t * 1000, y: p.p50 }));
    c["chart-freshness"].data.datasets[1].data = d.freshness.map((p) => ({ x: p.t * 1000, y: p.p95 }));
    Object.values(c).forEach((made) => made.update("none"));

    text("kpi-rate", fmt(d.events_per_second, 0));
    text("kpi-events", fmt(d.events_total, 0));
    text("kpi-members", fmt(d.members_scored, 0));
    text("kpi-high", fmt(d.churn_risk.high || 0, 0));
    text("kpi-conversion", d.conversion.mean_probability === null ? "–" : fmt(d.conversion.mean_probability, 3));
    text("kpi-freshness", d.freshness_p95_seconds === null ? "–" : `${fmt(d.freshness_p95_seconds, 2)} s`);
    alertsTable(d.alerts);
  }

  async function refresh() {
    const state = document.getElementById("state");
    try {
      const response = await fetch("/v1/dashboard", { credentials: "same-origin", cache: "no-store" });
      if (!response.ok) throw new Error(`${response.status} ${response.statusText}`);
      const d = await response.json();
      render(d);
      pulse.updates += 1;
      pulse.last = d;
      state.className = "state";
      state.textContent = `updated ${clock(d.generated_at * 1000)}`;
      state.dataset.updates = String(pulse.updates);
    } catch (err) {
      pulse.errors += 1;
      state.className = "state error";
      state.textContent = `cannot refresh: ${err.message}`;
    } finally {
      setTimeout(refresh, REFRESH_MS);
    }
  }

  document.addEventListener("DOMContentLoaded", () => { build(); refresh(); });
})();
