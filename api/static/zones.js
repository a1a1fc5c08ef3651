// Baywarden camera page: the picture's size sets the zone overlay's coordinates, the zones typed in the
// form are drawn over the picture as you type, and clicking the picture adds a point to the zone whose
// "Add points" button is pressed. The textareas stay the source of truth (keyboard users type x,y pairs).
// Loaded again by every htmx swap of the page: it binds its document listeners once.
(function () {
  "use strict";
  if (window.bwZones) { window.bwZones.init(); return; }
  const SVG = "http://www.w3.org/2000/svg";

  function $(id) { return document.getElementById(id); }

  function parse(text) {
    const pts = [];
    const tokens = String(text || "").replace(/\s*,\s*/g, ",").trim().split(/\s+/);
    for (const tok of tokens) {
      const m = /^(-?\d+(?:\.\d+)?),(-?\d+(?:\.\d+)?)$/.exec(tok);
      if (m) pts.push([Number(m[1]), Number(m[2])]);
    }
    return pts;
  }

  function sizeOverlay() {
    const img = $("cam-snapshot"), svg = $("zone-overlay");
    if (!img || !svg || !img.complete || !img.naturalWidth) return;
    const w = img.naturalWidth, h = img.naturalHeight;
    svg.setAttribute("viewBox", "0 0 " + w + " " + h);
    svg.setAttribute("font-size", String(Math.round(h / 24)));
    const status = $("snapshot-status");
    if (status) status.textContent = "Picture " + w + " \u00d7 " + h + " px.";
  }

  // Redraw the overlay from the form (only where the form exists: read-only pages keep the server's drawing).
  function redraw() {
    const svg = $("zone-overlay"), rows = document.querySelectorAll("#zone-rows .zone-row");
    if (!svg || !rows.length) return;
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    rows.forEach(function (row, i) {
      const pts = parse(row.querySelector(".zone-points").value);
      if (!pts.length) return;
      const g = document.createElementNS(SVG, "g");
      g.setAttribute("class", "zone zc" + (i % 6) + (row.classList.contains("drawing") ? " active" : ""));
      const shape = document.createElementNS(SVG, pts.length >= 3 ? "polygon" : "polyline");
      shape.setAttribute("points", pts.map(function (p) { return p.join(","); }).join(" "));
      g.appendChild(shape);
      pts.forEach(function (p) {
        const dot = document.createElementNS(SVG, "circle");
        dot.setAttribute("cx", p[0]); dot.setAttribute("cy", p[1]); dot.setAttribute("r", "0.25em");
        g.appendChild(dot);
      });
      const label = document.createElementNS(SVG, "text");
      label.setAttribute("x", String(pts.reduce(function (s, p) { return s + p[0]; }, 0) / pts.length));
      label.setAttribute("y", String(pts.reduce(function (s, p) { return s + p[1]; }, 0) / pts.length));
      label.setAttribute("text-anchor", "middle");
      label.textContent = row.querySelector("input").value || "zone " + (i + 1);  // textContent: stays text
      g.appendChild(label);
      svg.appendChild(g);
    });
  }

  function setDrawing(row) {
    document.querySelectorAll("#zone-rows .zone-row").forEach(function (r) {
      const on = r === row;
      r.classList.toggle("drawing", on);
      const b = r.querySelector(".zone-draw");
      if (b) b.setAttribute("aria-pressed", on ? "true" : "false");
    });
    const view = $("zone-view");
    if (view) view.classList.toggle("drawing", !!row);
    redraw();
  }

  function addRow() {
    const tpl = $("zone-row-template"), rows = $("zone-rows");
    if (!tpl || !rows) return null;
    const i = rows.querySelectorAll(".zone-row").length;
    const html = tpl.innerHTML.replace(/__i__/g, String(i));
    rows.insertAdjacentHTML("beforeend", html);
    const row = rows.lastElementChild;
    row.querySelector("legend").textContent = "Zone " + (i + 1);
    row.querySelector(".zone-tools").hidden = false;
    return row;
  }

  function change(textarea, fn) {
    const pts = fn(parse(textarea.value));
    textarea.value = pts.map(function (p) { return p.join(","); }).join(" ");
    redraw();
  }

  function onClick(ev) {
    const t = ev.target;
    if (!(t instanceof Element)) return;
    const row = t.closest(".zone-row");
    if (t.closest(".zone-draw")) { setDrawing(row.classList.contains("drawing") ? null : row); return; }
    if (t.closest(".zone-undo")) { change(row.querySelector(".zone-points"), function (p) { return p.slice(0, -1); }); return; }
    if (t.closest(".zone-clear")) { change(row.querySelector(".zone-points"), function () { return []; }); return; }
    if (t.closest("#zone-add")) { const r = addRow(); if (r) { setDrawing(r); r.querySelector("input").focus(); } return; }
    if (t.closest("#snapshot-refresh")) { refresh(); return; }
    const svg = t.closest("#zone-overlay");
    if (svg) {
      const active = document.querySelector("#zone-rows .zone-row.drawing");
      const status = $("snapshot-status");
      if (!active) {
        if (status && document.querySelector("#zone-rows")) status.textContent = "Press a zone's \u201cAdd points by clicking the picture\u201d first.";
        return;
      }
      const box = svg.getBoundingClientRect(), vb = svg.viewBox.baseVal;
      const x = Math.round((ev.clientX - box.left) * vb.width / box.width);
      const y = Math.round((ev.clientY - box.top) * vb.height / box.height);
      change(active.querySelector(".zone-points"), function (p) { return p.concat([[Math.max(0, x), Math.max(0, y)]]); });
    }
  }

  function refresh() {
    const img = $("cam-snapshot");
    if (!img) return;
    const status = $("snapshot-status");
    if (status) status.textContent = "Taking a new picture…";
    img.src = img.dataset.src + "?max_age=0&t=" + Date.now();
  }

  // The <img> cannot read an error's body: ask once more (the server kept the error a few seconds).
  function explain(img) {
    const status = $("snapshot-status");
    if (!status) return;
    fetch(img.dataset.src + "?max_age=30", { credentials: "same-origin" }).then(function (r) {
      if (r.ok) { status.textContent = "The picture could not be shown."; return null; }
      return r.json();
    }).then(function (body) {
      if (!body) return;
      const d = body.detail || {};
      status.textContent = "No picture: " + (typeof d === "string" ? d : (d.message || "unknown error"));
      status.classList.add("error");
    }).catch(function () { status.textContent = "No picture (the server did not answer)."; });
  }

  function init() {
    document.querySelectorAll(".zone-tools, #zone-add, #snapshot-refresh").forEach(function (el) { el.hidden = false; });
    const img = $("cam-snapshot");
    if (img && img.complete) { if (img.naturalWidth) sizeOverlay(); else if (img.currentSrc) explain(img); }
    redraw();
  }

  document.addEventListener("click", onClick);
  document.addEventListener("input", function (ev) {
    if (ev.target instanceof Element && ev.target.closest("#zone-rows")) redraw();
  });
  // load/error do not bubble; the capture phase sees them for every image.
  document.addEventListener("load", function (ev) {
    if (ev.target && ev.target.id === "cam-snapshot") {
      const status = $("snapshot-status");
      if (status) status.classList.remove("error");
      sizeOverlay();
    }
  }, true);
  document.addEventListener("error", function (ev) {
    if (ev.target && ev.target.id === "cam-snapshot") explain(ev.target);
  }, true);
  document.addEventListener("keydown", function (ev) {
    if (ev.key === "Escape" && document.querySelector("#zone-rows .zone-row.drawing")) setDrawing(null);
  });
  window.bwZones = { init: init, parse: parse };
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init); else init();
})();
