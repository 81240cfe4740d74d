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

// "Why?" opens the field's occlusion map under its row (a second tap closes it). The server computes the
// map on first request (about fifty runs of the model), so the row says so until the picture arrives.
document.addEventListener("click", function (event) {
  var link = event.target.closest("a[data-overlay]");
  if (!link) return;
  event.preventDefault();
  var row = link.closest("tr");
  var next = row.nextElementSibling;
  if (next && next.classList.contains("overlay-row")) { next.remove(); return; }
  var shown = document.createElement("tr");
  shown.className = "overlay-row";
  var cell = document.createElement("td");
  cell.colSpan = row.children.length;
  var figure = document.createElement("figure");
  var caption = document.createElement("figcaption");
  caption.className = "muted";
  caption.textContent = "Computing the occlusion map…";
  var image = document.createElement("img");
  image.alt = "occlusion map of " + (link.title || "the field");
  image.addEventListener("load", function () {
    caption.textContent = "Red: where hiding that part of the field lowered the model's confidence " +
      "the most. Uncoloured: hiding it changed little.";
  });
  image.addEventListener("error", function () { caption.textContent = "The occlusion map could not be made."; });
  image.src = link.dataset.overlay;
  figure.appendChild(image);
  figure.appendChild(caption);
  cell.appendChild(figure);
  shown.appendChild(cell);
  row.after(shown);
});
