// Dashboard: the status table follows the staff's counts stream (GET /api/tasks/counts/stream/)
// as tasks change; the other panels (queues, charts, kinds, workers) are fetched again every
// N seconds in the background. Without the stream (it failed for good, or no EventSource)
// the page reloads every N seconds instead, as it always did. "Pause" stops both timers
// and survives reloads (localStorage); the live counts go on. No library, nothing from a CDN.
(function () {
  "use strict";
  const KEY = "taskflow.dashboard.paused";

  function thousands(value) {
    // As the page renders them: 1,234,567; the final states have no "now" column (·).
    return value === null || value === undefined ? "·" : Number(value).toLocaleString("en-US");
  }

  function start() {
    const root = document.querySelector(".tf-dashboard");
    if (!root) return;
    const seconds = parseInt(root.dataset.refreshSeconds || "15", 10);
    const toggle = document.getElementById("refresh-toggle");
    const state = document.getElementById("refresh-state");
    const countsState = document.getElementById("counts-state");
    let timer = null;
    let live = false;
    let lostAt = null; // when the stream broke, while the browser reconnects it

    function paused() { return window.localStorage.getItem(KEY) === "1"; }
    function render() {
      toggle.textContent = paused() ? "Resume auto-refresh" : "Pause auto-refresh";
      toggle.setAttribute("aria-pressed", paused() ? "true" : "false");
      if (paused()) state.textContent = "Auto-refresh paused.";
      else if (live) state.textContent = "Other panels refreshed every " + seconds + " s.";
      else state.textContent = "Refreshing every " + seconds + " s.";
    }
    function schedule() {
      if (timer) window.clearTimeout(timer);
      timer = paused() ? null : window.setTimeout(tick, seconds * 1000);
    }
    function tick() {
      // A stream that ends (every 15 minutes) is back within seconds; one gone longer than a
      // period counts as unavailable. Never ?refresh=1 again: that recomputes the rollups.
      const lost = lostAt !== null && Date.now() - lostAt >= seconds * 1000;
      if (!live || lost) { window.location.replace(window.location.pathname); return; }
      refreshPanels().finally(schedule);
    }
    toggle.addEventListener("click", function () {
      window.localStorage.setItem(KEY, paused() ? "0" : "1");
      render();
      schedule();
    });

    function applyCounts(data) {
      Object.keys(data.statuses).forEach(function (status) {
        const row = root.querySelector('#status-counts tr[data-status="' + status + '"]');
        if (!row) return;
        const columns = data.statuses[status];
        Object.keys(columns).forEach(function (column) {
          const cell = row.querySelector('[data-column="' + column + '"]');
          const text = thousands(columns[column]);
          if (cell && cell.textContent !== text) {
            cell.textContent = text;
            cell.classList.remove("tf-changed");
            void cell.offsetWidth; // restart the highlight
            cell.classList.add("tf-changed");
          }
        });
      });
      countsState.textContent = "Counts live, as of " + new Date(data.computed_at).toLocaleTimeString() + ".";
    }

    function refreshPanels() {
      return fetch(window.location.pathname, { credentials: "same-origin" })
        .then(function (response) { return response.ok ? response.text() : Promise.reject(response.status); })
        .then(function (html) {
          const fresh = new DOMParser().parseFromString(html, "text/html");
          root.querySelectorAll("[data-tf-panel]").forEach(function (panel) {
            const replacement = fresh.getElementById(panel.id);
            if (replacement) panel.replaceWith(document.importNode(replacement, true));
          });
          loadWorkers();
        })
        .catch(function () { /* the next tick tries again */ });
    }

    function fallBack() {
      live = false;
      countsState.textContent = "Live counts unavailable.";
      render();
      schedule();
    }
    function listen() {
      const url = root.dataset.countsUrl;
      if (!url || !window.EventSource) { fallBack(); return; }
      const source = new EventSource(url);
      source.addEventListener("counts", function (message) {
        lostAt = null;
        applyCounts(JSON.parse(message.data));
        if (!live) { live = true; render(); }
      });
      source.onerror = function () {
        if (source.readyState === EventSource.CLOSED) { fallBack(); return; }
        // The browser reconnects by itself (the server sends its table again on connect).
        if (lostAt === null) lostAt = Date.now();
        countsState.textContent = "Reconnecting…";
      };
    }

    const workersBody = document.getElementById("workers-body");
    const workersUrl = root.dataset.workersUrl;
    const inspects = workersBody && workersBody.querySelector(".tf-notice") === null;
    function loadWorkers() {
      if (!inspects || !workersUrl) return;
      fetch(workersUrl, { credentials: "same-origin", headers: { "X-Requested-With": "XMLHttpRequest" } })
        .then(function (response) { return response.ok ? response.text() : Promise.reject(response.status); })
        .then(function (html) { workersBody.innerHTML = html; })
        .catch(function (status) { workersBody.textContent = "Could not load the workers (" + status + ")."; });
    }

    render();
    schedule();
    loadWorkers();
    listen();
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
