// The Simulcast section of the manage page: each target's status, refreshed from the API
// (every 5 s) and at once when the owner socket relays a "simulcast.status" event.
(() => {
  const section = document.getElementById("simulcast");
  if (!section) return;
  const rows = () => section.querySelectorAll("tr[data-target]");
  if (!rows().length) return;

  function render(targets) {
    const byId = new Map(targets.map((t) => [String(t.id), t]));
    for (const row of rows()) {
      const target = byId.get(row.dataset.target);
      if (!target) continue;
      const cell = row.querySelector("[data-status]");
      const badge = row.querySelector('[data-field="status"]');
      const detail = row.querySelector('[data-field="detail"]');
      const status = target.enabled ? target.status.status : "disabled";
      cell.dataset.status = target.status.status;
      badge.className = `badge ${target.status.status}`;
      badge.textContent = status;
      const attempt = target.status.attempt > 1 ? ` (attempt ${target.status.attempt})` : "";
      detail.textContent = `${target.status.reason || ""}${attempt}`;
    }
  }

  let timer = null;
  async function poll() {
    clearTimeout(timer);
    try {
      const response = await fetch(section.dataset.api, { credentials: "same-origin" });
      if (response.ok) render(await response.json());
    } catch (_err) {
      // Network trouble: the next poll tries again.
    }
    timer = setTimeout(poll, 5000);
  }
  poll();

  let delay = 1000;
  function connect() {
    let socket;
    try {
      const scheme = window.location.protocol === "https:" ? "wss" : "ws";
      socket = new WebSocket(`${scheme}://${window.location.host}${section.dataset.socket}`);
    } catch (_err) {
      return; // No socket: polling continues.
    }
    socket.addEventListener("open", () => { delay = 1000; });
    socket.addEventListener("message", (event) => {
      try {
        const frame = JSON.parse(event.data);
        if (frame && frame.type === "simulcast.status") poll();
      } catch (_err) {
        // Not JSON: ignored.
      }
    });
    socket.addEventListener("close", (event) => {
      if (event.code === 4401 || event.code === 4404) return;
      setTimeout(connect, delay);
      delay = Math.min(delay * 2, 30000);
    });
  }
  connect();
})();
