// Live view: fetch the server-rendered /board every data-poll-ms and swap it in (no reload, no other origin).
(function () {
  "use strict";
  var board = document.getElementById("board");
  var live = document.getElementById("live");
  var every = parseInt(document.body.dataset.pollMs, 10) || 1000;
  var last = board.innerHTML;
  function tick() {
    fetch("/board", {cache: "no-store"}).then(function (reply) {
      if (!reply.ok) { throw new Error("HTTP " + reply.status); }
      return reply.text();
    }).then(function (html) {
      if (html !== last) { board.innerHTML = html; last = html; }
      live.textContent = "live"; live.className = "live on";
    }).catch(function () {
      live.textContent = "hook not answering"; live.className = "live off";
    }).finally(function () { setTimeout(tick, every); });
  }
  live.textContent = "live"; live.className = "live on";
  setTimeout(tick, every);
})();
