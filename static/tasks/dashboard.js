// Dashboard: load the live workers panel, and reload the page every N seconds unless paused.
// The pause survives reloads (localStorage). No library, nothing from a CDN.
(function () {
  "use strict";
  const KEY = "taskflow.dashboard.paused";
  function start() {
    const root = document.querySelector(".tf-dashboard");
    if (!root) return;
    const seconds = parseInt(root.dataset.refreshSeconds || "15", 10);
    const toggle = document.getElementById("refresh-toggle");
    const state = document.getElementById("refresh-state");
    let timer = null;

    function paused() { return window.localStorage.getItem(KEY) === "1"; }
    function render() {
      toggle.textContent = paused() ? "Resume auto-refresh" : "Pause auto-refresh";
      toggle.setAttribute("aria-pressed", paused() ? "true" : "false");
      state.textContent = paused() ? "Auto-refresh paused." : "Refreshing every " + seconds + " s.";
    }
    function schedule() {
      if (timer) window.clearTimeout(timer);
      timer = paused() ? null : window.setTimeout(function () { window.location.reload(); }, seconds * 1000);
    }
    toggle.addEventListener("click", function () {
      window.localStorage.setItem(KEY, paused() ? "0" : "1");
      render();
      schedule();
    });
    render();
    schedule();

    const body = document.getElementById("workers-body");
    const url = root.dataset.workersUrl;
    if (body && url && body.querySelector(".help")) {
      fetch(url, { credentials: "same-origin", headers: { "X-Requested-With": "XMLHttpRequest" } })
        .then(function (response) { return response.ok ? response.text() : Promise.reject(response.status); })
        .then(function (html) { body.innerHTML = html; })
        .catch(function (status) { body.textContent = "Could not load the workers (" + status + ")."; });
    }
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
