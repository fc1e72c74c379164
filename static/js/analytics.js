// Analytics pages: charts (Chart.js from static/vendor/chart.umd.js) from the JSON the page
// embeds with json_script, and the live health panel, which polls the live health API every
// 5 s (and refreshes at once when the owner socket relays an "analytics.ingest" frame).
// All text goes in with textContent; nothing from the server is parsed as HTML.
(() => {
  "use strict";

  const COLORS = { accent: "#7c5cff", live: "#e5484d", ok: "#30a46c", warn: "#e5a50a", muted: "#9aa3b2", grid: "#2a2f3a" };
  const POLL_MS = 5000;

  function embedded(id) {
    const node = document.getElementById(id);
    return node ? JSON.parse(node.textContent) : null;
  }

  function clock(iso) {
    const d = new Date(iso);
    return `${String(d.getUTCHours()).padStart(2, "0")}:${String(d.getUTCMinutes()).padStart(2, "0")}:${String(d.getUTCSeconds()).padStart(2, "0")}`;
  }

  function makeChart(canvasId, labels, datasets, scales) {
    const canvas = document.getElementById(canvasId);
    if (!canvas || !window.Chart) return null;
    return new window.Chart(canvas, {
      type: "line",
      data: { labels, datasets },
      options: {
        responsive: true,
        maintainAspectRatio: false,
        animation: false,
        interaction: { mode: "index", intersect: false },
        plugins: { legend: { labels: { color: COLORS.muted } } },
        scales: Object.fromEntries(
          Object.entries(scales).map(([id, s]) => [
            id,
            { grid: { color: COLORS.grid }, ticks: { color: COLORS.muted }, beginAtZero: true, ...s },
          ]),
        ),
      },
    });
  }

  function line(label, data, color, axis, extra) {
    return { label, data, borderColor: color, backgroundColor: color, pointRadius: 0, borderWidth: 2, yAxisID: axis, spanGaps: true, ...extra };
  }

  const history = embedded("history-data");
  if (history) {
    makeChart(
      "history-chart",
      history.map((d) => d.day),
      [
        line("Peak viewers", history.map((d) => d.peak_viewers), COLORS.accent, "y", { type: "bar", order: 2 }),
        line("Watch hours", history.map((d) => Math.round((d.watch_time_s / 3600) * 100) / 100), COLORS.ok, "y1"),
      ],
      { x: {}, y: { title: { display: true, text: "viewers", color: COLORS.muted } }, y1: { position: "right", grid: { drawOnChartArea: false }, title: { display: true, text: "hours", color: COLORS.muted } } },
    );
  }

  const viewers = embedded("viewers-data");
  if (viewers) {
    makeChart(
      "viewers-chart",
      viewers.map((p) => clock(p.at)),
      [line("Average viewers", viewers.map((p) => p.avg), COLORS.accent, "y"), line("Peak viewers", viewers.map((p) => p.peak), COLORS.muted, "y", { borderDash: [4, 4] })],
      { x: {}, y: {} },
    );
  }

  const ingest = embedded("ingest-data");
  if (ingest) {
    const labels = ingest.map((p) => clock(p.at));
    makeChart(
      "ingest-chart",
      labels,
      [
        line("Bitrate (Mb/s)", ingest.map((p) => (p.bitrate == null ? null : p.bitrate / 1e6)), COLORS.accent, "y"),
        line("Frame rate (fps)", ingest.map((p) => p.fps), COLORS.ok, "y1"),
      ],
      { x: {}, y: { title: { display: true, text: "Mb/s", color: COLORS.muted } }, y1: { position: "right", grid: { drawOnChartArea: false }, title: { display: true, text: "fps", color: COLORS.muted } } },
    );
    const lagCanvas = document.getElementById("lag-chart");
    const warnAt = lagCanvas ? Number(lagCanvas.dataset.lagWarn) : NaN;
    const datasets = [line("Worst transcoder lag (s)", ingest.map((p) => p.lag_s), COLORS.live, "y"), line("Queue depth", ingest.map((p) => p.queue), COLORS.muted, "y1")];
    if (Number.isFinite(warnAt)) datasets.push(line("Falling behind", labels.map(() => warnAt), COLORS.warn, "y", { borderDash: [6, 4], borderWidth: 1 }));
    makeChart("lag-chart", labels, datasets, { x: {}, y: { title: { display: true, text: "seconds", color: COLORS.muted } }, y1: { position: "right", grid: { drawOnChartArea: false } } });
  }

  // --- Live health panel ----------------------------------------------------------------------
  const panel = document.getElementById("live-health");
  if (!panel) return;
  const field = (name) => panel.querySelector(`[data-field="${name}"]`);
  const set = (name, text) => {
    const node = field(name);
    if (node) node.textContent = text;
  };

  function render(data) {
    const ingestNow = data.ingest || {};
    const lags = Object.entries(ingestNow.lag_s || {}).filter(([, v]) => typeof v === "number");
    const worst = lags.reduce((best, item) => (best && best[1] >= item[1] ? best : item), null);
    set("bitrate", ingestNow.bitrate == null ? "–" : `${(ingestNow.bitrate / 1e6).toFixed(2)} Mb/s`);
    set("fps", ingestNow.fps == null ? "–" : `${Number(ingestNow.fps).toFixed(1)} fps`);
    set("lag", worst ? `${worst[1].toFixed(1)} s (${worst[0]})` : "–");
    set("queue", data.queue_depth == null ? "–" : String(data.queue_depth));
    set("viewers", data.viewers == null ? "–" : String(data.viewers));
    const renditions = Object.entries(data.per_rendition || {}).sort((a, b) => b[1] - a[1]);
    set("renditions", renditions.length ? renditions.map(([name, n]) => `${name}: ${n}`).join(" · ") : "–");
    set("updated", !data.live ? "The stream is not live." : ingestNow.at ? `Sample of ${clock(ingestNow.at)} UTC` : "No ingest sample yet.");
    const list = field("warnings");
    list.replaceChildren(
      ...(data.warnings || []).map((w) => {
        const item = document.createElement("li");
        item.dataset.code = w.code;
        item.textContent = `⚠ ${w.message}`;
        return item;
      }),
    );
    panel.classList.toggle("behind", (data.warnings || []).length > 0);
  }

  let timer = null;
  async function poll() {
    clearTimeout(timer);
    try {
      const response = await fetch(panel.dataset.url, { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (response.status === 503) {
        set("updated", "Analytics are off: the analytics database is unreachable.");
        return; // stop polling; reload the page to try again
      }
      if (response.ok) render(await response.json());
    } catch (_err) {
      set("updated", "Live health unavailable (network); retrying…");
    }
    timer = setTimeout(poll, POLL_MS);
  }
  poll();

  // Push: the follow_changes command sends the owner-only "analytics.*" events to the stream's
  // owner group; the owner socket (data-socket, /ws/streams/<id>/owner/: owner or staff only,
  // not counted as a viewer) relays them. Optional: polling alone keeps the panel current.
  // The socket's state is mirrored in data-socket-state, pushes counted in data-pushes.
  const FINAL_CODES = new Set([4401, 4404]); // not signed in / not the owner: retrying cannot help
  let delay = 1000;
  function connect() {
    let socket;
    try {
      const scheme = window.location.protocol === "https:" ? "wss" : "ws";
      socket = new WebSocket(`${scheme}://${window.location.host}${panel.dataset.socket}`);
    } catch (_err) {
      return; // No socket: polling continues.
    }
    socket.addEventListener("open", () => {
      delay = 1000;
      panel.dataset.socketState = "open";
    });
    socket.addEventListener("message", (event) => {
      let frame = null;
      try {
        frame = JSON.parse(event.data);
      } catch (_err) {
        return;
      }
      if (frame && frame.type === "analytics.ingest") {
        panel.dataset.pushes = String(Number(panel.dataset.pushes || 0) + 1);
        poll();
      }
    });
    socket.addEventListener("close", (event) => {
      panel.dataset.socketState = "closed";
      if (FINAL_CODES.has(event.code)) return;
      setTimeout(connect, delay * (0.75 + Math.random() / 2));
      delay = Math.min(delay * 2, 30000);
    });
  }
  if (panel.dataset.socket) connect();
})();
