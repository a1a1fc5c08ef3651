// Subscribe this browser to Web Push for the notice's plate (VAPID key from the page).
(function () {
  const btn = document.getElementById("push");
  if (!btn || !("serviceWorker" in navigator) || !("PushManager" in window)) { if (btn) btn.hidden = true; return; }
  const b64 = (s) => Uint8Array.from(atob((s + "=".repeat((4 - s.length % 4) % 4)).replace(/-/g, "+").replace(/_/g, "/")), (c) => c.charCodeAt(0));
  btn.addEventListener("click", async () => {
    const reg = await navigator.serviceWorker.register("/static/sw.js");
    const sub = await reg.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: b64(btn.dataset.key) });
    const r = await fetch(btn.dataset.url, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(sub) });
    btn.textContent = r.ok ? "Notifications on" : "Could not subscribe";
    btn.disabled = r.ok;
  });
})();
