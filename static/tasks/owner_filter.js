// The task list's owner filter: Django's autocomplete select (admin/js/autocomplete.js sets
// it up). Choosing or clearing an owner submits the little form, which carries the list's
// other filters. select2 reports the choice as a jQuery event, hence django.jQuery.
(function () {
  "use strict";
  function start() {
    const $ = window.django && window.django.jQuery;
    if (!$) return;
    $(".tf-owner-filter").on("change", function () { $(this).closest("form").trigger("submit"); });
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
