// The taxonomy dashboard: a click on a genre of the sunburst opens the clip explorer filtered to it
// (the figure carries each node's explorer URL as customdata[2]).
(function () {
  "use strict";
  function wire(gd) {
    if (!gd || !gd.on) return;
    gd.on("plotly_sunburstclick", function (ev) {
      var pt = ev && ev.points && ev.points[0];
      var url = pt && pt.customdata && pt.customdata[2];
      if (url) {
        window.location.assign(url);
        return false; // navigate instead of zooming
      }
      return true;
    });
  }
  function init() {
    document.querySelectorAll(".js-plotly-plot").forEach(wire);
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
