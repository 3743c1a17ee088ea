// A task's admin page, live: its event stream moves the progress bar, adds history rows and
// updates the status as they happen. When the task is final the page reloads (result,
// buttons), unless an operator is typing a reason. Without the stream (it failed for good,
// or the browser has no EventSource) the page reloads every 15 s while the task is not final.
// No library, nothing from a CDN.
(function () {
  "use strict";
  const FALLBACK_SECONDS = 15;

  function cell(text, className) {
    const td = document.createElement("td");
    if (className) td.className = className;
    td.textContent = text;
    return td;
  }
  function badge(status, label) {
    const span = document.createElement("span");
    span.className = "tf-status tf-status-" + status;
    span.textContent = label || status;
    return span;
  }

  function start() {
    const root = document.getElementById("tf-live-task");
    if (!root || root.dataset.final === "true") return;
    const body = document.querySelector("#timeline tbody");
    const progress = document.querySelector(".field-progress_column progress");
    const progressMessage = document.querySelector(".field-progress_message .readonly");
    const status = document.querySelector(".field-status_column .readonly");
    const reason = document.getElementById("id_reason");
    const state = root.querySelector(".tf-live-state");

    function fallBack() {
      state.textContent = "Live updates unavailable: reloading every " + FALLBACK_SECONDS + " s.";
      window.setTimeout(function () { window.location.reload(); }, FALLBACK_SECONDS * 1000);
    }
    if (!window.EventSource) { fallBack(); return; }

    const url = root.dataset.streamUrl + "?last_event_id=" + encodeURIComponent(root.dataset.lastEventId || "0");
    const source = new EventSource(url);
    source.onopen = function () { state.textContent = "Live."; };
    source.onerror = function () {
      if (source.readyState === EventSource.CLOSED) fallBack();
      else state.textContent = "Reconnecting…";
    };
    source.addEventListener("progress", function (message) {
      const data = JSON.parse(message.data);
      if (progress) {
        progress.value = data.progress;
        progress.textContent = data.progress + " %";
        progress.title = data.progress + " %";
      }
      if (progressMessage) progressMessage.textContent = data.progress_message || "-";
    });
    source.addEventListener("task", function (message) {
      const data = JSON.parse(message.data);
      const empty = body.querySelector("td[colspan]");
      if (empty) empty.parentNode.remove();
      const row = document.createElement("tr");
      row.dataset.eventId = data.id;
      row.appendChild(cell(data.created_at.replace("T", " ").slice(0, 19), "nowrap"));
      const change = cell("", "nowrap");
      if (data.from_status) { change.appendChild(badge(data.from_status)); change.append(" → "); }
      change.appendChild(badge(data.to_status));
      row.appendChild(change);
      row.appendChild(cell(data.actor || data.worker || "system"));
      row.appendChild(cell(String(data.attempt)));
      row.appendChild(cell(data.message));
      body.appendChild(row);
      if (status && data.to_status) {
        // As the page shows it: the status's label ("Running").
        const label = data.to_status.charAt(0).toUpperCase() + data.to_status.slice(1);
        status.textContent = "";
        status.appendChild(badge(data.to_status, label));
      }
    });
    source.addEventListener("end", function () {
      source.close();
      state.textContent = "The task is final.";
      if (!reason || !reason.value) window.setTimeout(function () { window.location.reload(); }, 1000);
    });
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
