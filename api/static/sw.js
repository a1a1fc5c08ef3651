// Shows Baywarden push messages (the payload is the notice text).
self.addEventListener("push", (event) => {
  const text = event.data ? event.data.text() : "Baywarden notice";
  event.waitUntil(self.registration.showNotification("Baywarden", { body: text }));
});
