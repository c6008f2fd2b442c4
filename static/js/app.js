// Smart Balancers: the few behaviours htmx does not cover. Delegated, so they also
// work on fragments htmx swaps in.
(function () {
  "use strict";

  document.addEventListener("click", function (event) {
    var copy = event.target.closest("[data-copy]");
    if (copy) {
      var source = document.getElementById(copy.getAttribute("data-copy"));
      if (!source) return;
      var text = source.innerText;
      var done = function () {
        var label = copy.textContent;
        copy.textContent = "Copied";
        setTimeout(function () { copy.textContent = label; }, 1400);
      };
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(text).then(done, function () {});
      } else {
        var area = document.createElement("textarea");
        area.value = text;
        document.body.appendChild(area);
        area.select();
        try { document.execCommand("copy"); done(); } catch (e) { /* nothing to do */ }
        area.remove();
      }
      return;
    }
    var tab = event.target.closest("[role=tab]");
    if (tab) {
      var list = tab.closest("[role=tablist]");
      list.querySelectorAll("[role=tab]").forEach(function (other) {
        var selected = other === tab;
        other.setAttribute("aria-selected", selected ? "true" : "false");
        other.tabIndex = selected ? 0 : -1;
        var panel = document.getElementById(other.getAttribute("aria-controls"));
        if (panel) panel.hidden = !selected;
      });
    }
  });

  // Wizard forms save as they are edited (htmx). A step submit waits for a save in flight
  // and cancels any that would start after it, so leaving the page never aborts a request.
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!form.hasAttribute || !form.hasAttribute("data-autosave")) return;
    var busy = form.classList.contains("htmx-request") || form.querySelector(".htmx-request");
    if (busy && !form.dataset.waited) {
      event.preventDefault();
      form.dataset.waited = "1";
      var submitter = event.submitter;
      var sent = false;
      var go = function () {
        if (sent) return;
        sent = true;
        form.requestSubmit(submitter && submitter.form === form ? submitter : undefined);
      };
      document.addEventListener("htmx:afterRequest", function done() {
        document.removeEventListener("htmx:afterRequest", done);
        setTimeout(go, 0);
      });
      setTimeout(go, 2000);
      return;
    }
    form.dataset.submitting = "1";
  });
  document.addEventListener("htmx:beforeRequest", function (event) {
    var form = event.target.closest && event.target.closest("form[data-autosave]");
    if (form && form.dataset.submitting) event.preventDefault();
  });

  // A live check (the wizard's name and serving name) answers a new #feedback-<field>: the field it
  // describes follows it, invalid while the check finds a problem and valid once it says "✓".
  // After the settle: until then htmx keeps the old element's classes on the new one.
  document.addEventListener("htmx:afterSettle", function (event) {
    var feedback = event.target;
    if (!feedback.id || feedback.id.indexOf("feedback-") !== 0) return;
    var field = document.querySelector('[aria-describedby~="' + feedback.id + '"]');
    if (!field) return;
    if (feedback.classList.contains("field-error")) field.setAttribute("aria-invalid", "true");
    else if (feedback.classList.contains("field-ok")) field.removeAttribute("aria-invalid");
  });

  // Arrow keys move between tabs, as in any tab list.
  document.addEventListener("keydown", function (event) {
    var tab = event.target.closest && event.target.closest("[role=tab]");
    if (!tab || (event.key !== "ArrowRight" && event.key !== "ArrowLeft")) return;
    var tabs = Array.prototype.slice.call(tab.closest("[role=tablist]").querySelectorAll("[role=tab]"));
    var next = tabs[(tabs.indexOf(tab) + (event.key === "ArrowRight" ? 1 : tabs.length - 1)) % tabs.length];
    next.focus();
    next.click();
  });
})();
