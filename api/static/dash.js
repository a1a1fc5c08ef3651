// Baywarden dashboard: live alert pop-ups (Server-Sent Events) with a short WebAudio beep.
(function () {
  "use strict";
  let audio = null;

  function beep(severity) {
    try {
      audio = audio || new (window.AudioContext || window.webkitAudioContext)();
      if (audio.state === "suspended") audio.resume();
      const osc = audio.createOscillator();
      const gain = audio.createGain();
      osc.type = "sine";
      osc.frequency.value = severity === "critical" ? 1320 : 880;
      gain.gain.setValueAtTime(0.15, audio.currentTime);
      gain.gain.exponentialRampToValueAtTime(0.001, audio.currentTime + 0.35);
      osc.connect(gain).connect(audio.destination);
      osc.start();
      osc.stop(audio.currentTime + 0.35);
    } catch (e) { /* no audio available: the pop-up still shows */ }
  }

  function show(alert) {
    const box = document.getElementById("alert-pop");
    if (!box) return;
    const item = document.createElement("div");
    item.className = "pop pop-" + String(alert.severity || "warning").replace(/[^a-z]/g, "");
    item.setAttribute("role", "alert");
    item.dataset.kind = alert.kind || "";
    const title = document.createElement("strong");
    title.textContent = alert.title || alert.kind;  // textContent: names and plates stay text
    const detail = document.createElement("p");
    detail.textContent = [alert.subject, alert.detail].filter(Boolean).join(" · ");
    const close = document.createElement("button");
    close.type = "button";
    close.textContent = "Dismiss";
    close.addEventListener("click", function () { item.remove(); });
    item.append(title, detail, close);
    box.prepend(item);
    beep(alert.severity);
  }

  function connect() {
    const url = document.body.dataset.alertStream;
    if (!url || !window.EventSource) return;
    const source = new EventSource(url);
    source.addEventListener("alert", function (ev) {
      let alert = null;
      try { alert = JSON.parse(ev.data); show(alert); } catch (e) { /* malformed event: ignore */ }
      // Live sections (the overview's alerts and counts) listen for this and refresh themselves.
      if (alert) document.body.dispatchEvent(new CustomEvent("bw:alert", { detail: alert }));
    });
    source.addEventListener("open", function () { document.body.dataset.alertsLive = "yes"; });
  }

  // Audio may only start after a user gesture; unlock it on the first one.
  document.addEventListener("pointerdown", function () { if (!audio) { try { audio = new AudioContext(); } catch (e) {} } }, { once: true });
  document.addEventListener("DOMContentLoaded", connect);
  // Move focus to the swapped content so keyboard and screen-reader users follow navigation.
  document.addEventListener("htmx:afterSwap", function (ev) {
    if (ev.detail.target && ev.detail.target.id === "main") ev.detail.target.focus({ preventScroll: true });
  });

  // The header is not swapped by boosted navigation: mark the current page and close the Admin menu.
  function markCurrent() {
    const path = window.location.pathname;
    document.querySelectorAll(".nav a").forEach(function (a) {
      const href = a.getAttribute("href");
      const base = href.indexOf("/dash/lists/") === 0 ? "/dash/lists" : href;
      const here = href === "/dash" ? path === "/dash" : path.indexOf(base) === 0;
      if (here) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
    });
    document.querySelectorAll(".nav-more[open]").forEach(function (d) { d.removeAttribute("open"); });
  }
  document.addEventListener("htmx:pushedIntoHistory", markCurrent);
  document.addEventListener("htmx:historyRestore", markCurrent);
  document.addEventListener("click", function (ev) {
    document.querySelectorAll(".nav-more[open]").forEach(function (d) {
      if (!d.contains(ev.target)) d.removeAttribute("open");
    });
  });
})();
