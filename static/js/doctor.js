// The ingest doctor on the stream's dashboard (templates/streams/ingest_doctor.html): the owner
// socket (/ws/streams/<id>/owner/, owner or staff only) pushes "ingest.findings" whenever the
// set of findings changes; the list is replaced with the pushed one. Without a socket the page
// shows what it was rendered with.
(() => {
  const panel = document.getElementById("ingest-doctor");
  if (!panel || !panel.dataset.socket || !window.WebSocket) return;
  const list = panel.querySelector("#ingest-findings");
  const scope = panel.querySelector("#ingest-doctor-scope");

  function item(finding) {
    const li = document.createElement("li");
    li.className = `finding ${finding.severity}`;
    li.dataset.code = finding.code;
    const title = document.createElement("strong");
    title.textContent = finding.title;
    li.append(title);
    for (const text of [finding.detail, finding.obs]) {
      const p = document.createElement("p");
      p.textContent = text;
      li.append(p);
    }
    const p = document.createElement("p");
    const code = document.createElement("code");
    code.textContent = finding.ffmpeg;
    p.append(code);
    li.append(p);
    return li;
  }

  function render(findings) {
    list.replaceChildren();
    if (!findings.length) {
      const li = document.createElement("li");
      li.className = "finding ok";
      li.textContent = "Nothing to change: your source looks right.";
      list.append(li);
    }
    for (const finding of findings) list.append(item(finding));
    if (scope) scope.textContent = "This broadcast, checked as it arrives.";
    panel.dataset.pushes = String(Number(panel.dataset.pushes || 0) + 1);
  }

  const FINAL_CODES = new Set([4401, 4404]);
  let delay = 1000;
  function connect() {
    const scheme = window.location.protocol === "https:" ? "wss" : "ws";
    const socket = new WebSocket(`${scheme}://${window.location.host}${panel.dataset.socket}`);
    socket.addEventListener("open", () => {
      delay = 1000;
    });
    socket.addEventListener("message", (event) => {
      let frame = null;
      try {
        frame = JSON.parse(event.data);
      } catch (_err) {
        return;
      }
      if (frame && frame.type === "ingest.findings" && Array.isArray(frame.findings)) render(frame.findings);
    });
    socket.addEventListener("close", (event) => {
      if (FINAL_CODES.has(event.code)) return;
      setTimeout(connect, delay * (0.75 + Math.random() / 2));
      delay = Math.min(delay * 2, 30000);
    });
  }
  connect();
})();
