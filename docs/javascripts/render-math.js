// Typesets the formulas that pymdownx.arithmatex (generic mode) leaves in the page, with the KaTeX
// served from javascripts/vendor/katex (no network needed). Arithmatex wraps each formula in an
// element of class "arithmatex": a <div> holding \[...\] for display math, a <span> holding \(...\)
// inline. A formula KaTeX cannot parse is shown in red (class katex-error); tools/check_site.py fails on it.
(function () {
  function renderMath(root) {
    root.querySelectorAll(".arithmatex").forEach(function (element) {
      if (element.querySelector(".katex")) return; // already typeset
      var text = element.textContent.trim();
      var display = text.startsWith("\\[");
      katex.render(text.slice(2, -2), element, { displayMode: display, throwOnError: false });
    });
  }
  if (typeof document$ !== "undefined") {
    // Material for MkDocs: runs on the first load and after every instant navigation.
    document$.subscribe(function () { renderMath(document.body); });
  } else if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", function () { renderMath(document.body); });
  } else {
    renderMath(document.body);
  }
})();
