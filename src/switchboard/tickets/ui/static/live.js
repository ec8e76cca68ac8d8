// Live call page: appends new messages (and replaces changed ones) from the server-sent event stream.
// Without JavaScript the page still reads; it just does not update until reloaded.
(function () {
  "use strict";
  var list = document.getElementById("transcript");
  if (!list || !list.dataset.events || !window.EventSource) { return; }
  // Start after the messages the page was rendered with; a reconnect resumes from Last-Event-ID.
  var source = new EventSource(list.dataset.events + "?after=" + encodeURIComponent(list.dataset.lastId || "0"));

  function place(node) {
    var seq = Number(node.dataset.seq);
    var items = list.children;
    for (var i = items.length - 1; i >= 0; i--) {
      if (Number(items[i].dataset.seq) <= seq) { items[i].after(node); return; }
    }
    list.prepend(node);
  }

  source.addEventListener("message", function (event) {
    var data = JSON.parse(event.data);
    var holder = document.createElement("template");
    holder.innerHTML = data.html.trim();
    var node = holder.content.firstElementChild;
    var existing = document.getElementById(data.dom_id);
    if (existing) { existing.replaceWith(node); } else { place(node); }
    var empty = document.getElementById("no-messages");
    if (empty) { empty.remove(); }
  });

  source.addEventListener("ended", function (event) {
    source.close();
    var data = JSON.parse(event.data);
    var note = document.getElementById("live-note");
    if (note) { note.textContent = "The call has ended" + (data.end_reason ? " (" + data.end_reason + ")." : "."); }
    var status = document.getElementById("call-status");
    if (status) { status.textContent = "ended"; }
    var latency = document.getElementById("latency-section");
    if (latency && data.latency_html) {
      var holder = document.createElement("template");
      holder.innerHTML = data.latency_html.trim();
      latency.replaceWith(holder.content.firstElementChild);
    }
  });
})();
