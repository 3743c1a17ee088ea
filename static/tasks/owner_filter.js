// The task list's owner filter: the admin's own select2, fed by TaskAdmin's owner search.
// Choosing an owner submits the little form (which carries the list's other filters).
(function () {
  "use strict";
  function start() {
    const $ = window.django && window.django.jQuery;
    if (!$ || !$.fn.select2) return;
    $(".tf-owner-filter").each(function () {
      const select = $(this);
      select.select2({
        allowClear: true,
        width: "100%",
        placeholder: select.data("placeholder"),
        ajax: {
          url: select.data("ajax--url"),
          dataType: "json",
          delay: 250,
          data: function (params) { return { term: params.term || "", page: params.page || 1 }; }
        }
      });
      select.on("change", function () { select.closest("form").trigger("submit"); });
    });
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
