// allx-edge serve: the page's only script. It says "working" while a form posts (classifying a
// batch on a Pi takes seconds) and keeps a second tap from sending the same fields twice.
document.addEventListener("submit", function (event) {
  var form = event.target;
  var button = form.querySelector("button[type=submit]");
  if (!button) return;
  if (form.dataset.sent) { event.preventDefault(); return; }
  form.dataset.sent = "1";
  if (form.dataset.busy) button.textContent = form.dataset.busy;
  window.setTimeout(function () { button.disabled = true; }, 0);
});
