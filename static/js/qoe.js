// Player experience (QoE) reporter: watches the page's hls.js player and sends small batches of
// events to POST /api/v1/analytics/playback/ (see docs/analytics.md for the format).
//
// Attaches to window.livePlayer (static/js/player.js): .hls (hls.js instance), .video, .config
// ({streamId, mode}); re-attaches on every "live-player-ready" event (a new hls.js
// instance after the stream comes back). Reports: startup (load -> first frame), heartbeat
// (seconds played, every 10 s, with the rendition playing), rebuffer (stall seconds), latency
// (distance from the live edge), switch (new rendition), error (hls.js errors, "fatal:" first).
// Stops for good on 400/404/409/413/503 answers (bad page config, broadcast over, analytics off);
// backs off on 429. Replays (mode "vod") are not reported: the server takes reports only for a
// broadcast on air or just ended (docs/analytics.md).
(() => {
  "use strict";

  const ENDPOINT = "/api/v1/analytics/playback/";
  const FLUSH_MS = 10000;
  const HEARTBEAT_MS = 10000;
  const MAX_BATCH = 50;
  const MAX_QUEUE = 200;
  const MAX_ERRORS_PER_FLUSH = 5;

  const viewer = (() => {
    const bytes = new Uint8Array(12);
    window.crypto.getRandomValues(bytes);
    return "v" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  })();

  let queue = [];
  let disabled = false;
  let flushEvery = FLUSH_MS;
  let flushTimer = null;
  let errorsThisFlush = 0;
  let current = null; // state of the player attached now

  function clean(name) {
    return String(name || "").replace(/[^A-Za-z0-9_.-]/g, "").slice(0, 32);
  }

  function levelName(hls, index) {
    const level = hls && hls.levels && hls.levels[index];
    if (!level) return "";
    if (level.name && !/^\d+$/.test(level.name)) return clean(level.name);
    if (level.height) return `${level.height}p`;
    return clean(`l${index}`);
  }

  function push(kind, fields) {
    if (disabled) return;
    if (kind === "error") {
      if (errorsThisFlush >= MAX_ERRORS_PER_FLUSH) return;
      errorsThisFlush += 1;
    }
    if (queue.length >= MAX_QUEUE) queue.shift();
    queue.push({ kind, t: performance.now(), ...fields });
  }

  function body(events, config) {
    const payload = {
      stream: Number(config.streamId),
      viewer,
      events: events.map((e) => {
        const out = { kind: e.kind, age_ms: Math.max(0, Math.min(600000, Math.round(performance.now() - e.t))) };
        if (typeof e.value === "number" && Number.isFinite(e.value)) out.value = Math.max(0, Math.round(e.value * 1000) / 1000);
        if (e.rendition) out.rendition = e.rendition;
        if (e.detail) out.detail = String(e.detail).slice(0, 500);
        return out;
      }),
    };
    // No session: the server picks the one on air (or just ended), which stays right when the
    // stream ends and restarts while the page is open.
    return JSON.stringify(payload);
  }

  function flush(useBeacon) {
    if (disabled || !current || queue.length === 0) return;
    const events = queue.splice(0, MAX_BATCH);
    errorsThisFlush = 0;
    const data = body(events, current.config);
    if (useBeacon && navigator.sendBeacon) {
      navigator.sendBeacon(ENDPOINT, new Blob([data], { type: "application/json" }));
      return;
    }
    fetch(ENDPOINT, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: data,
      credentials: "omit",
      keepalive: true,
    })
      .then((response) => {
        if (response.status === 429) {
          flushEvery = Math.min(flushEvery * 2, 120000);
          queue = events.concat(queue).slice(0, MAX_QUEUE);
        } else if ([400, 404, 409, 413, 503].includes(response.status)) {
          disabled = true; // misconfigured page, broadcast over or analytics off: stop, never retry in a loop
          queue = [];
        } else if (response.ok) {
          flushEvery = FLUSH_MS;
        }
      })
      .catch(() => {
        queue = events.concat(queue).slice(0, MAX_QUEUE); // network blip: keep for next time
      });
  }

  function schedule() {
    clearTimeout(flushTimer);
    flushTimer = setTimeout(() => {
      flush(false);
      schedule();
    }, flushEvery);
  }

  function attach(player) {
    if (!player || !player.hls || !player.config || !player.config.streamId) return;
    if (player.config.mode === "vod") {
      // Replays are not reported; a live page that turns into its replay sends what it has.
      if (current) {
        current.detach();
        flush(false);
        current = null;
      }
      return;
    }
    if (current && current.hls === player.hls) return;
    if (current) current.detach();
    const hls = player.hls;
    const video = player.video || hls.media;
    const Hls = window.Hls;
    const state = {
      hls,
      config: player.config,
      started: false,
      stallStart: null,
      playedSince: null,
      played: 0,
      timer: null,
      rendition: () => levelName(hls, hls.currentLevel >= 0 ? hls.currentLevel : hls.loadLevel),
    };

    function accrue() {
      if (state.playedSince !== null) {
        state.played += (performance.now() - state.playedSince) / 1000;
        state.playedSince = performance.now();
      }
    }
    function onPlaying() {
      const now = performance.now();
      if (!state.started) {
        state.started = true;
        // performance.now() counts from navigation start: page load to first frame.
        push("startup", { value: Math.min(now / 1000, 120), rendition: state.rendition() });
      }
      if (state.stallStart !== null) {
        push("rebuffer", { value: Math.min((now - state.stallStart) / 1000, 600), rendition: state.rendition() });
        state.stallStart = null;
      }
      state.playedSince = now;
    }
    function onWaiting() {
      accrue();
      state.playedSince = null;
      if (state.started && state.stallStart === null && !video.seeking) state.stallStart = performance.now();
    }
    function onPause() {
      accrue();
      state.playedSince = null;
    }
    function heartbeat() {
      accrue();
      if (state.played > 0) {
        push("heartbeat", { value: Math.min(state.played, 120), rendition: state.rendition() });
        state.played = 0;
      }
      const latency = hls.latency;
      if (player.config.mode !== "vod" && typeof latency === "number" && Number.isFinite(latency) && latency > 0) {
        push("latency", { value: Math.min(latency, 3600), rendition: state.rendition() });
      }
    }
    function onSwitched(_event, data) {
      if (state.started) push("switch", { rendition: levelName(hls, data.level) });
    }
    function onError(_event, data) {
      push("error", {
        detail: `${data.fatal ? "fatal: " : ""}${data.type || "error"} ${data.details || ""}`.trim(),
        rendition: state.rendition(),
      });
    }

    video.addEventListener("playing", onPlaying);
    video.addEventListener("waiting", onWaiting);
    video.addEventListener("pause", onPause);
    hls.on(Hls.Events.LEVEL_SWITCHED, onSwitched);
    hls.on(Hls.Events.ERROR, onError);
    state.timer = setInterval(heartbeat, HEARTBEAT_MS);
    state.detach = () => {
      heartbeat();
      clearInterval(state.timer);
      video.removeEventListener("playing", onPlaying);
      video.removeEventListener("waiting", onWaiting);
      video.removeEventListener("pause", onPause);
      hls.off(Hls.Events.LEVEL_SWITCHED, onSwitched);
      hls.off(Hls.Events.ERROR, onError);
    };
    if (!video.paused && video.readyState > 2) onPlaying();
    current = state;
    schedule();
  }

  document.addEventListener("live-player-ready", (event) => attach(event.detail || window.livePlayer));
  if (window.livePlayer) attach(window.livePlayer);
  window.addEventListener("pagehide", () => {
    if (current) current.detach();
    flush(true);
  });
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "hidden") flush(true);
  });
  window.liveQoe = { viewer, flush: () => flush(false), pending: () => queue.length };
})();
