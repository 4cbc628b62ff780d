// Pantau console conveniences; every page works without them.
(function () {
  "use strict";
  // Spoken-duration estimate while typing: espeak-ng speaks 175 words a minute by default
  // (the server's send::spoken_seconds does the same).
  var text = document.getElementById("text");
  var estimate = document.getElementById("estimate");
  if (text && estimate) {
    var wpm = parseInt(estimate.getAttribute("data-wpm"), 10) || 175;
    var update = function () {
      var words = text.value.trim().split(/\s+/).filter(function (w) { return w.length > 0; }).length;
      estimate.textContent = String(Math.ceil(words * 60 / wpm));
    };
    text.addEventListener("input", update);
    update();
  }
  // The Now page reloads itself, unless the person is in the middle of something.
  var auto = document.getElementById("autorefresh");
  if (auto) {
    var seconds = parseInt(auto.getAttribute("data-seconds"), 10) || 3;
    setInterval(function () {
      var active = document.activeElement;
      if (active && active.tagName === "BUTTON") { return; }
      window.location.replace(window.location.pathname);
    }, seconds * 1000);
  }
})();
