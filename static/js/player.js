// The viewer's player: hls.js (or Safari's native HLS) on the watch, embed and replay pages.
//
// Reads its configuration from <script id="player-config" type="application/json">
// (streams.views._player_config): {mode: "live"|"vod", src, live, streamId, statusUrl, dvrWindow}.
//
// Contract for other scripts (static/js/qoe.js and the browser tests rely on it):
// - window.livePlayer is this page's player: .hls (the current hls.js instance, or null with
//   native HLS / while offline), .video, .config, .jumpToLive(), .setQuality(index),
//   .playingDate() (the program date-time on screen, ms, or null; the chat syncs to it).
// - document fires "live-player-ready" (detail: the player) each time a new hls.js instance is
//   attached, e.g. after the stream goes live again.
// - Live/offline and viewer counts arrive over the page's one WebSocket (window.LiveSocket,
//   built by the chat panel, docs/chat.md): frames "stream.live", "stream.ready",
//   "stream.offline", "viewers.count"; the status URL is re-read after each (re)connect. Without
//   a socket (embed page) the player polls the status URL instead. .transport says which
//   ("socket" | "poll").
// - Starting (docs/viewer.md, ADR 0018): "stream.live" only says a publish was accepted; the
//   player shows "Starting..." (root data-state "starting") and starts hls.js on "stream.ready"
//   (every rendition has its first segment listed). It also asks the edge for the master itself
//   ("probe"): once when the stream goes live or the page opens live (a reconnect within the same
//   session, or a page opened on a playable stream, starts from that answer; the master text is
//   handed to hls.js, so no second master request), then only as a fallback: without a socket
//   every PROBE_FIRST_MS, backing off to PROBE_MAX_MS; with a socket only if no "stream.ready"
//   came within SOCKET_SAFETY_MS; at most PROBE_LIMIT_MS in all. .startedBy says what started
//   the current playback ("ready" | "probe" | "legacy" | "vod").
// - DVR (docs/viewer.md, ADR 0029): with dvrWindow > 0 hls.js gets each rendition's DVR window
//   (index.m3u8, the last dvrWindow seconds) while the loader holds on the short live.m3u8. A
//   seek behind the edge is DVR playback (.dvr: hls.js no longer pulls the viewer to the edge);
//   the badge (#live-badge, data-edge "true"|"false", class "behind") says whether the viewer is
//   at the live edge, and "Go live" (#jump-live, .jumpToLive()) returns there.
// - "?start=legacy" on the page's URL restores the old start for comparisons (the glass-to-glass
//   bench's baseline): hls.js starts on "stream.live" and retries the master every 2 s on 404.
(() => {
  "use strict";

  // "?worker=1" on the page URL (and the legacy start): transmux in hls.js's worker, as before.
  const PAGE_FLAGS = new URLSearchParams(window.location.search);
  const WORKER = PAGE_FLAGS.get("worker") === "1" || PAGE_FLAGS.get("start") === "legacy";
  // Low-latency live tuning, in units of the playlist's target duration so it suits 1 s and 2 s
  // chunks alike: play 1.5 chunks behind the newest listed segment; beyond 4 chunks behind,
  // hls.js seeks forward; in between it catches up by playing slightly faster.
  const LIVE_CONFIG = {
    lowLatencyMode: true,
    liveSyncDurationCount: 1.5,
    liveMaxLatencyDurationCount: 4,
    maxLiveSyncPlaybackRate: 1.15,
    backBufferLength: 10,
    maxBufferLength: 12,
    startPosition: -1,
    capLevelToPlayerSize: true,
    // Transmux on the page's thread: hls.js's worker is created with the first fragment and
    // must first parse hls.js itself (measured: most of the 0.6-0.85 s between the first
    // segment's arrival and the first frame on the loaded bench machine, ADR 0018).
    enableWorker: WORKER,
    manifestLoadPolicy: {
      default: {
        maxTimeToFirstByteMs: 8000,
        maxLoadTimeMs: 10000,
        timeoutRetry: { maxNumRetry: 4, retryDelayMs: 500, maxRetryDelayMs: 2000 },
        errorRetry: { maxNumRetry: 6, retryDelayMs: 1000, maxRetryDelayMs: 4000 },
      },
    },
  };
  // Blocking playlist reload, done by the player. hls.js reloads a live playlist on its own
  // timer, one segment after the last update, at a phase fixed when the viewer joined: a new
  // segment could sit at the edge for most of a segment before the player asked for it
  // (measured 1.5 s of 2), so the player had to stay further behind to avoid stalls. This loader
  // tells hls.js that the server can block (it adds EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES to
  // the text it hands over; the playlists at the edge stay plain RFC 8216), so hls.js asks for
  // "_HLS_msn=N" (the next segment) right after each update; the loader answers by polling the
  // playlist at the edge (query "_hold=<ms>": past the browser cache, not the edge's) until
  // segment N is listed (or the playlist ends, or HOLD_TARGETS
  // target durations pass). It sleeps until the next segment is due, then polls every POLL_MS:
  // a few cached requests per segment per viewer.
  const POLL_MS = 100;
  const HOLD_TARGETS = 3;
  const WAKE_EARLY_MS = 500;
  const playlistClock = new Map(); // plain URL -> { msn, at, duration } of the last new segment
  // Playlists that turned out to be LL-HLS (EXT-X-PART-INF, ADR 0031): the origin holds
  // "_HLS_msn"/"_HLS_part" requests itself, so the loader passes them through untouched.
  const lowLatencyPlaylists = new Set();

  function parsePlaylist(text) {
    let sequence = 0;
    let count = 0;
    let target = 2;
    let last = 0;
    for (const line of text.split("\n")) {
      if (line.startsWith("#EXT-X-MEDIA-SEQUENCE:")) sequence = Number(line.slice(22)) || 0;
      else if (line.startsWith("#EXT-X-TARGETDURATION:")) target = Number(line.slice(22)) || target;
      else if (line.startsWith("#EXTINF:")) last = parseFloat(line.slice(8)) || last;
      else if (line && !line.startsWith("#")) count += 1;
    }
    return { lastMsn: sequence + count - 1, target, last, ended: text.includes("#EXT-X-ENDLIST") };
  }

  // The DVR window of a live level playlist ("<rendition>/live.m3u8" -> "index.m3u8", ADR 0029),
  // or null when the page has no DVR window.
  function dvrUrl(url, config) {
    if (config.mode !== "live" || !(config.dvrWindow > 0) || !url.pathname.endsWith("/live.m3u8")) return null;
    const dvr = new URL(url.toString());
    dvr.pathname = dvr.pathname.replace(/\/live\.m3u8$/, "/index.m3u8");
    return dvr.toString();
  }

  function announceBlockingReload(text) {
    if (!text.startsWith("#EXTM3U") || text.includes("#EXT-X-SERVER-CONTROL") || !text.includes("#EXTINF")) {
      return text;
    }
    return text.replace("#EXTM3U", "#EXTM3U\n#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES");
  }

  // A master the player's probe just fetched, as hls.js's loaders answer (LoadStats shape).
  function answerFromPrefetch(hit, context, callbacks) {
    const bytes = hit.text.length;
    const stats = {
      aborted: false, loaded: bytes, retry: 0, total: bytes, chunkCount: 0, bwEstimate: 0,
      loading: { start: hit.asked, first: hit.at, end: hit.at },
      parsing: { start: 0, end: 0 },
      buffering: { start: 0, first: 0, end: 0 },
    };
    return setTimeout(() => callbacks.onSuccess({ url: hit.finalUrl, data: hit.text, code: 200 }, stats, context, null), 0);
  }

  function holdingPlaylistLoader(Base, player) {
    return class HoldingPlaylistLoader {
      constructor(config) {
        this.config = config;
        this.inner = new Base(config);
        this.timer = null;
        this.finished = false;
        this.fakeStats = null;
      }

      get stats() {
        return this.fakeStats || this.inner.stats;
      }

      get context() {
        return this.inner.context;
      }

      load(context, loaderConfig, callbacks) {
        const hit = context.type === "manifest" && player ? player.takePrefetched(context.url) : null;
        if (hit) {
          this.timer = answerFromPrefetch(hit, context, {
            onSuccess: (response, stats, ctx, details) => {
              if (this.finished) return;
              this.finished = true;
              this.fakeStats = stats;
              callbacks.onSuccess(response, stats, ctx, details);
            },
          });
          return;
        }
        const url = new URL(context.url, window.location.href);
        const wanted = url.searchParams.has("_HLS_msn") ? Number(url.searchParams.get("_HLS_msn")) : null;
        for (const name of ["_HLS_msn", "_HLS_part", "_HLS_skip"]) url.searchParams.delete(name);
        const plain = url.toString();
        const started = performance.now();
        const dvr = player && context.type !== "manifest" ? dvrUrl(url, player.config) : null;
        // The DVR window (index.m3u8) is what hls.js gets; the short live.m3u8 is what the loader
        // polls while it holds (the two share their media sequence numbers).
        const deliver = (response, stats, details) => {
          if (this.finished) return;
          this.finished = true;
          if (typeof response.data === "string" && response.data.includes("#EXT-X-PART-INF")) lowLatencyPlaylists.add(plain);
          callbacks.onSuccess({ ...response, data: announceBlockingReload(response.data) }, stats, context, details);
        };
        if (lowLatencyPlaylists.has(plain) && context.type !== "manifest") {
          // LL-HLS: hls.js's own blocking reload (and the DVR window's playlist when there is one).
          const direct = new URL(dvr || plain);
          for (const [name, value] of new URL(context.url, window.location.href).searchParams) {
            if (name.startsWith("_HLS_")) direct.searchParams.set(name, value);
          }
          this.inner.load({ ...context, url: direct.toString() }, loaderConfig, {
            ...callbacks,
            onSuccess: (response, stats, _ctx, details) => deliver(response, stats, details),
          });
          return;
        }
        const deliverDvr = () => {
          this.inner = new Base(this.config);
          this.inner.load({ ...context, url: dvr }, loaderConfig, {
            ...callbacks,
            onSuccess: (response, stats, _ctx, details) => {
              const text = typeof response.data === "string" ? response.data : "";
              deliver({ ...response, data: text }, stats, details);
            },
          });
        };
        if (dvr && wanted === null) {
          deliverDvr(); // the first load: nothing to hold for
          return;
        }
        const attempt = (first) => {
          if (!first) this.inner = new Base(this.config);
          // A fresh query string per poll keeps the browser's HTTP cache (max-age=1) out of the
          // way; the edge ignores query strings (cache key and origin request).
          const poll = new URL(plain);
          if (wanted !== null) poll.searchParams.set("_hold", String(Date.now()));
          this.inner.load({ ...context, url: poll.toString() }, loaderConfig, {
            ...callbacks,
            onSuccess: (response, stats, _ctx, details) => {
              if (this.finished) return;
              const text = typeof response.data === "string" ? response.data : "";
              const info = parsePlaylist(text);
              const now = performance.now();
              let clock = playlistClock.get(plain);
              if (!clock || info.lastMsn > clock.msn) {
                clock = { msn: info.lastMsn, at: now, duration: info.last };
                playlistClock.set(plain, clock);
              }
              const holding = wanted !== null && info.lastMsn < wanted && !info.ended;
              if (holding && now - started < HOLD_TARGETS * info.target * 1000) {
                // Wake a little before the next segment is due ("at" may be late: we only know
                // when we saw the last one, so the margin also corrects it within a few segments).
                const due = clock.at + clock.duration * 1000 - Math.min(WAKE_EARLY_MS, clock.duration * 500);
                this.timer = setTimeout(() => attempt(false), Math.max(POLL_MS, due - now));
                return;
              }
              if (dvr) deliverDvr();
              else deliver({ ...response, data: text }, stats, details);
            },
          });
        };
        attempt(true);
      }

      abort() {
        this.finished = true;
        clearTimeout(this.timer);
        this.inner.abort();
      }

      destroy() {
        this.finished = true;
        clearTimeout(this.timer);
        this.inner.destroy();
      }
    };
  }

  // Target distance behind the live edge: one segment (the typical one, measured from the
  // playlist, not from EXT-X-TARGETDURATION: a 1 s chunk stream may announce a target of 2)
  // plus a margin for the next one to arrive late: half a segment, at least LIVE_SYNC_MARGIN_S.
  // With blocking reloads the buffer refills as soon as a segment is listed, so the margin only
  // has to cover the pipeline's and the edge's jitter.
  const LIVE_SYNC_MARGIN_S = 0.8;
  // While the viewer watches the DVR window on purpose: hls.js's "too far behind" limit.
  const DVR_NO_CATCH_UP_S = 1e9;
  const VOD_CONFIG = { startPosition: 0, backBufferLength: 60, capLevelToPlayerSize: true };
  const RETRY_MS = 2000;
  // After "stream.offline", the card comes back at the latest this long after (normally the
  // buffered end plays out and "ended" or a 404 brings it earlier).
  const OFFLINE_GRACE_MS = 30000;
  const STATUS_POLL_MS = 10000;
  // Waiting for a playable stream (see the header): the fallback's schedule and its bound.
  const PROBE_FIRST_MS = 250;
  const PROBE_BACKOFF = 1.5;
  const PROBE_MAX_MS = 1000;
  const SOCKET_SAFETY_MS = 10000;
  const SOCKET_PROBE_MAX_MS = 5000;
  const PROBE_LIMIT_MS = 120000;
  const LEGACY_START = PAGE_FLAGS.get("start") === "legacy";

  function levelLabel(level) {
    if (level.name && !/^\d+$/.test(level.name)) return level.name;
    if (level.height) return `${level.height}p`;
    return `${Math.round((level.bitrate || 0) / 1000)} kbps`;
  }

  class LivePlayer {
    constructor(root, config) {
      this.root = root;
      this.config = config;
      this.video = root.querySelector("video");
      this.quality = root.querySelector("#quality");
      this.badge = root.querySelector("#live-badge");
      this.jumpButton = root.querySelector("#jump-live");
      this.offlineCard = root.querySelector("#offline-card");
      this.message = root.querySelector("#player-message");
      this.viewerCount = document.getElementById("viewer-count");
      this.hls = null;
      this.native = false;
      this.live = Boolean(config.live);
      this.retryTimer = null;
      this.transport = "none"; // how live/offline news arrives: "socket" (chat panel's) or "poll"
      this.stalls = 0;
      this.errors = []; // the last hls.js errors, for diagnosis (newest last)
      this.history = []; // the last lifecycle steps (start, stop, live, offline...), for diagnosis
      this.liveNewsAt = 0; // when the socket last said live/offline (performance.now())
      this.legacy = LEGACY_START;
      this.sessionId = config.sessionId || null; // the session on air, when known
      this.waiting = null; // while waiting for a playable stream: { since, attempt, timer }
      this.prefetched = null; // a master the probe fetched, for hls.js's manifest load
      this.probes = 0; // master requests made by the probe (diagnosis, tests)
      this.readyAt = 0; // when "stream.ready" last arrived (performance.now())
      this.startedBy = "none";
      this.dvr = false; // the viewer seeked back into the DVR window (hls.js lets them stay)
      this.warm = null; // an hls.js attached to the video, waiting for its source
      this.bindUi();
      this.bindSocket();
      if (config.mode === "vod") this.start("vod");
      else if (this.live && this.legacy) this.start("legacy");
      else if (this.live) this.awaitPlayable();
    }

    // --- lifecycle -------------------------------------------------------------------------

    note(step) {
      this.history = [...this.history, `${Math.round(performance.now())} ${step}`].slice(-20);
    }

    start(by = "legacy") {
      this.stop();
      this.stopWaiting();
      this.startedBy = by;
      this.note(`start (${by})`);
      this.showMessage("");
      this.root.dataset.state = "loading";
      if (this.offlineCard) this.offlineCard.hidden = true;
      this.video.hidden = false;
      const src = this.config.src;
      if (window.Hls && window.Hls.isSupported()) {
        this.startHls(src);
      } else if (this.video.canPlayType("application/vnd.apple.mpegurl")) {
        // Safari (iOS) plays HLS itself; no quality menu, the OS picks renditions.
        this.native = true;
        this.video.src = src;
        this.video.play().catch(() => {});
        this.root.dataset.state = "playing";
      } else {
        this.showMessage("This browser cannot play HLS video.");
      }
    }

    createHls() {
      const Hls = window.Hls;
      const live = { ...LIVE_CONFIG, pLoader: holdingPlaylistLoader(Hls.DefaultConfig.loader, this) };
      const hls = new Hls(this.config.mode === "vod" ? VOD_CONFIG : live);
      hls.on(Hls.Events.MANIFEST_PARSED, () => {
        this.fillQualityMenu();
        this.root.dataset.state = "playing";
        this.video.play().catch(() => {
          // Autoplay refused (sound policies): the native controls let the viewer start it.
        });
      });
      hls.on(Hls.Events.LEVEL_SWITCHED, (_e, data) => this.onLevelSwitched(data.level));
      hls.on(Hls.Events.LEVEL_UPDATED, (_e, data) => this.tuneLatency(data.details));
      hls.on(Hls.Events.ERROR, (_e, data) => {
        if (hls === this.hls) this.onHlsError(data);
      });
      hls.attachMedia(this.video);
      return hls;
    }

    // While a live stream is not playable yet, hls.js is created and attached to the video
    // already (its MediaSource opens meanwhile): stream.ready then only has to load the source.
    warmUp() {
      if (this.warm || this.legacy || this.config.mode !== "live" || !(window.Hls && window.Hls.isSupported())) return;
      this.warm = this.createHls();
    }

    dropWarm() {
      if (!this.warm) return;
      this.warm.destroy();
      this.warm = null;
    }

    startHls(src) {
      const hls = this.warm || this.createHls();
      this.warm = null;
      this.hls = hls;
      this.tunedLatency = 0;
      this.snapped = false;
      this.dvr = false;
      hls.loadSource(src);
      this.announceReady();
    }

    stop() {
      clearTimeout(this.retryTimer);
      if (this.hls) {
        this.note("stop");
        this.hls.destroy();
        this.hls = null;
      }
      if (this.native) {
        this.video.removeAttribute("src");
        this.video.load();
        this.native = false;
      }
    }

    // Live latency: aim a typical segment plus a margin behind the edge (hls.targetLatency),
    // and once playback has started, jump there if the start position was further back.
    tuneLatency(details) {
      if (!details || !details.live || !this.hls) return;
      if (details.partTarget) {
        // LL-HLS: hls.js stays PART-HOLD-BACK behind the newest part, unless a sync count is
        // configured (that one is for standard HLS, where a segment is the unit).
        delete this.hls.userConfig.liveSyncDurationCount;
        this.lowLatency = true;
        return;
      }
      const durations = details.fragments.slice(-6).map((f) => f.duration).sort((a, b) => a - b);
      const chunk = durations[Math.floor(durations.length / 2)];
      if (!chunk) return;
      const target = chunk + Math.max(LIVE_SYNC_MARGIN_S, chunk / 2);
      if (Math.abs(this.tunedLatency - target) > 0.2) {
        this.hls.targetLatency = target;
        this.tunedLatency = target;
      }
    }

    snapToLive() {
      if (this.snapped || this.config.mode !== "live" || !this.hls) return;
      const position = this.hls.liveSyncPosition;
      if (position == null || this.video.currentTime <= 0) return;
      this.snapped = true;
      if (position - this.video.currentTime > 1) {
        this.note(`jump ${this.video.currentTime.toFixed(2)} -> ${position.toFixed(2)}`);
        this.video.currentTime = position;
      }
    }

    announceReady() {
      document.dispatchEvent(new CustomEvent("live-player-ready", { detail: this }));
    }

    onHlsError(data) {
      const Hls = window.Hls;
      if (data.details === Hls.ErrorDetails.BUFFER_STALLED_ERROR) this.stalls += 1;
      const code = data.response && data.response.code ? ` ${data.response.code}` : "";
      this.errors = [...this.errors, `${data.fatal ? "fatal " : ""}${data.details}${code}`].slice(-10);
      if (!data.fatal) return;
      if (data.type === Hls.ErrorTypes.MEDIA_ERROR) {
        this.hls.recoverMediaError();
        return;
      }
      // Network errors: the playlist is not there yet (stream just went live) or has gone
      // (stream ended without a recording). Retry while the stream is live, else go offline.
      this.stop();
      if (this.config.mode === "live" && !this.live) {
        this.showOffline();
        return;
      }
      const missing = data.details === Hls.ErrorDetails.MANIFEST_LOAD_ERROR && data.response && data.response.code === 404;
      if (this.config.mode === "live" && missing && !this.legacy) {
        this.awaitPlayable(); // not playable (yet, or any more): wait for stream.ready / probe
        return;
      }
      this.showMessage("Connecting to the stream…");
      this.retryTimer = setTimeout(() => this.start(), RETRY_MS);
    }

    // --- live / offline ----------------------------------------------------------------------

    setLive(live) {
      const was = this.live;
      if (live !== was) this.note(live ? "live" : "offline");
      this.live = live;
      this.setBadge(live);
      clearTimeout(this.offlineTimer);
      if (live && !was) {
        if (this.legacy) this.start("legacy");
        else this.awaitPlayable();
      }
      if (!live) {
        this.stopWaiting();
        this.dropWarm();
      }
      // Going offline: let the buffered end play out; "ended" or a 404 then shows the card.
      if (!live && was && this.config.mode === "live") {
        this.offlineTimer = setTimeout(() => {
          if (!this.live) this.showOffline();
        }, OFFLINE_GRACE_MS);
      }
    }

    setBadge(live) {
      if (!this.badge) return;
      this.badge.textContent = live ? "LIVE" : "OFFLINE";
      this.badge.classList.toggle("live", live);
      this.badge.dataset.live = String(live);
    }

    showOffline() {
      this.note("show offline");
      this.stop();
      this.stopWaiting();
      this.dropWarm();
      this.video.hidden = true;
      if (this.offlineCard) this.offlineCard.hidden = false;
      this.root.dataset.state = "offline";
      if (this.jumpButton) this.jumpButton.hidden = true;
      this.quality.disabled = true;
    }

    showMessage(text) {
      if (!this.message) return;
      this.message.textContent = text;
      this.message.hidden = !text;
    }

    // --- the page's socket (chat panel) or polling --------------------------------------------

    bindSocket() {
      if (this.config.mode !== "live") return;
      const attach = () => {
        const socket = window.LiveSocket;
        if (!socket || typeof socket.on !== "function") return false;
        socket.on("stream.live", (frame) => this.socketSays(true, frame));
        socket.on("stream.ready", (frame) => this.onReady(frame));
        socket.on("stream.offline", () => this.socketSays(false));
        socket.on("viewers.count", (frame) => this.setViewers(frame.count));
        // After every (re)connect: events sent while the socket was down are lost, so re-read.
        if (typeof socket.onOpen === "function") socket.onOpen(() => this.refreshStatus());
        this.transport = "socket";
        return true;
      };
      // chat.js is deferred: it has run by DOMContentLoaded (this script runs before it).
      const bindOrPoll = () => {
        if (attach()) return;
        this.transport = "poll";
        this.refreshStatus();
        this.pollTimer = setInterval(() => this.refreshStatus(), STATUS_POLL_MS);
      };
      if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", bindOrPoll);
      else bindOrPoll();
    }

    socketSays(live, frame) {
      this.liveNewsAt = performance.now();
      if (live && frame && frame.session) this.sessionId = frame.session;
      this.setLive(live);
    }

    // --- starting: stream.ready, or the probe ---------------------------------------------------

    // Every rendition of the session has its first segment listed: start now.
    onReady(frame) {
      this.readyAt = performance.now();
      this.liveNewsAt = this.readyAt;
      if (this.legacy || this.config.mode !== "live") return;
      const session = frame && frame.session ? frame.session : null;
      this.note(`ready ${session || ""}`);
      const started = this.hls !== null && (!session || session === this.sessionId);
      if (session) this.sessionId = session;
      if (!this.live) this.setBadge(true);
      this.live = true;
      clearTimeout(this.offlineTimer);
      if (started) return; // already playing (or loading) this session
      this.start("ready");
    }

    // Live but maybe not playable yet: show "Starting...", ask the edge once now, then wait for
    // stream.ready (socket) or keep asking with backoff (no socket), within PROBE_LIMIT_MS.
    awaitPlayable() {
      if (this.config.mode !== "live") return;
      this.stop();
      this.showStarting();
      this.warmUp();
      if (this.waiting) {
        clearTimeout(this.waiting.timer);
        this.waiting.attempt = 0;
      } else {
        this.waiting = { since: performance.now(), attempt: 0, timer: null };
      }
      this.probe();
    }

    showStarting() {
      this.root.dataset.state = "starting";
      if (this.offlineCard) this.offlineCard.hidden = true;
      this.video.hidden = false;
      this.showMessage("Starting…");
    }

    stopWaiting() {
      if (!this.waiting) return;
      clearTimeout(this.waiting.timer);
      this.waiting = null;
    }

    nextProbeDelay(attempt) {
      if (this.transport === "socket") {
        // The socket brings stream.ready: probing is only a safety net (a lost event).
        return attempt === 1 ? SOCKET_SAFETY_MS : SOCKET_PROBE_MAX_MS;
      }
      return Math.min(PROBE_MAX_MS, PROBE_FIRST_MS * PROBE_BACKOFF ** (attempt - 1));
    }

    probe() {
      const waiting = this.waiting;
      if (!waiting) return;
      waiting.attempt += 1;
      this.probes += 1;
      const src = this.config.src;
      const session = this.sessionId;
      const asked = performance.now();
      fetch(src, { cache: "no-store", credentials: "omit" })
        .then((r) => (r.ok ? r.text().then((text) => ({ text, url: r.url || src })) : null))
        .catch(() => null)
        .then((answer) => {
          if (this.waiting !== waiting) return; // started, or went offline, meanwhile
          // The stable master of THIS session (the previous broadcast's may still be there): its
          // variants are under "<session>-<tag>/". A private preview's own master (ownMaster,
          // ADR 0034) is the session's by its path and lists its renditions directly.
          const lines = answer ? answer.text.split("\n").filter((l) => l && !l.startsWith("#")) : [];
          const mine = (l) => this.config.ownMaster || l.startsWith(`${session}-`);
          const ours = lines.length > 0 && (!session || lines.every(mine));
          if (answer && answer.text.startsWith("#EXTM3U") && ours) {
            this.note("probe: playable");
            this.prefetched = { url: src, finalUrl: answer.url, text: answer.text, asked, at: performance.now() };
            this.start("probe");
            return;
          }
          this.note("probe: not yet");
          if (performance.now() - waiting.since > PROBE_LIMIT_MS) {
            this.note("probe: gave up");
            this.showMessage("The stream is not playable yet.");
            this.waiting = null;
            return;
          }
          waiting.timer = setTimeout(() => this.probe(), this.nextProbeDelay(waiting.attempt));
        });
    }

    // hls.js's first manifest request is answered from the probe's fresh answer (no second trip).
    takePrefetched(url) {
      const hit = this.prefetched;
      this.prefetched = null;
      if (!hit || hit.url !== url || performance.now() - hit.at > 2000) return null;
      return hit;
    }

    refreshStatus() {
      if (!this.config.statusUrl) return;
      const asked = performance.now();
      fetch(this.config.statusUrl, { headers: { Accept: "application/json" }, credentials: "same-origin" })
        .then((r) => (r.ok ? r.json() : null))
        .then((status) => {
          if (!status) return;
          this.setViewers(status.viewer_count);
          // An answer older than the socket's latest news is stale (the page asks right after
          // connecting; a publish can land while the answer is on its way).
          if (this.liveNewsAt > asked) return;
          const wasWaiting = this.waiting;
          this.setLive(status.status === "live");
          // After a (re)connect, a stream.ready sent while the socket was down is lost: ask now.
          if (wasWaiting && this.waiting === wasWaiting && this.live && this.transport === "socket") {
            clearTimeout(wasWaiting.timer);
            this.probe();
          }
        })
        .catch(() => {});
    }

    setViewers(count) {
      if (this.viewerCount && Number.isFinite(count)) this.viewerCount.textContent = String(count);
    }

    // --- controls ---------------------------------------------------------------------------

    bindUi() {
      this.quality.addEventListener("change", () => this.setQuality(Number(this.quality.value)));
      if (this.jumpButton) this.jumpButton.addEventListener("click", () => this.jumpToLive());
      this.video.addEventListener("waiting", () => {
        if (!this.video.seeking && this.video.currentTime > 0) this.root.dataset.buffering = "true";
      });
      this.video.addEventListener("playing", () => {
        delete this.root.dataset.buffering;
        this.snapToLive();
      });
      this.video.addEventListener("ended", () => {
        if (this.config.mode === "live") this.showOffline();
      });
      this.video.addEventListener("timeupdate", () => this.updateLiveEdge());
      this.video.addEventListener("seeking", () => this.onSeeking());
      // A viewer who pauses resumes where they paused (in the DVR window), not at the edge.
      this.video.addEventListener("pause", () => {
        if (this.config.mode === "live" && this.hls && !this.video.ended && this.config.dvrWindow > 0) this.setDvr(true);
      });
      // Keyboard: "l" jumps to live; the video's native controls and the menu take focus normally.
      this.root.addEventListener("keydown", (event) => {
        if (event.key === "l" && event.target.tagName !== "SELECT") this.jumpToLive();
      });
    }

    fillQualityMenu() {
      const levels = this.hls ? this.hls.levels : [];
      const options = [new Option("Auto", "-1")];
      levels
        .map((level, index) => ({ level, index }))
        .sort((a, b) => (b.level.height || 0) - (a.level.height || 0) || b.level.bitrate - a.level.bitrate)
        .forEach(({ level, index }) => options.push(new Option(levelLabel(level), String(index))));
      this.quality.replaceChildren(...options);
      this.quality.value = "-1";
      this.quality.disabled = levels.length < 2;
    }

    setQuality(index) {
      if (!this.hls) return;
      // An explicit choice switches now (flushing the buffer); Auto hands control back to ABR.
      this.hls.currentLevel = index;
      this.quality.value = String(index);
    }

    onLevelSwitched(index) {
      this.root.dataset.level = String(index);
      const auto = this.quality.options[0];
      const level = this.hls && this.hls.levels[index];
      if (auto && level) auto.textContent = `Auto (${levelLabel(level)})`;
    }

    livePosition() {
      if (this.hls && this.hls.liveSyncPosition != null) return this.hls.liveSyncPosition;
      const seekable = this.video.seekable;
      if (seekable.length) return Math.max(seekable.start(0), seekable.end(seekable.length - 1) - 3);
      return null;
    }

    // The program date-time on screen, in ms since the epoch (the playing segment's
    // EXT-X-PROGRAM-DATE-TIME plus the position in it), or null when unknown: not started,
    // offline, a playlist without date-times. The chat shows messages by it (ADR 0035).
    playingDate() {
      if (this.root.dataset.state === "offline" || this.video.hidden) return null;
      if (this.hls) {
        const date = this.hls.playingDate;
        return date ? date.getTime() : null;
      }
      if (this.native && typeof this.video.getStartDate === "function") {
        const start = this.video.getStartDate().getTime();
        return Number.isFinite(start) && start > 0 ? start + this.video.currentTime * 1000 : null;
      }
      return null;
    }

    // "Go live" (and the "l" key): back to the live edge, and hls.js keeps the viewer there again.
    jumpToLive() {
      if (this.config.mode !== "live") return;
      const position = this.livePosition();
      if (position == null) return;
      this.setDvr(false);
      this.note(`go live ${this.video.currentTime.toFixed(2)} -> ${position.toFixed(2)}`);
      this.video.currentTime = position;
      this.video.play().catch(() => {});
      this.updateLiveEdge();
    }

    // How far behind the live edge still counts as "at the edge": the target latency plus a
    // segment's worth of jitter.
    edgeSlack() {
      const target = this.hls && this.hls.levels.length ? this.hls.targetLatency || 3 : 3;
      return target + 3;
    }

    behindEdge() {
      const position = this.livePosition();
      return position != null && position - this.video.currentTime > this.edgeSlack();
    }

    // A seek that lands behind the edge is the viewer's (hls.js and "Go live" seek towards the
    // edge): DVR playback (only with a DVR window: without one the edge is all there is). hls.js would otherwise pull a viewer more than
    // liveMaxLatencyDurationCount segments behind back to the edge at its next playlist update.
    onSeeking() {
      if (this.config.mode !== "live" || !this.hls) return;
      if (this.config.dvrWindow > 0 && this.behindEdge()) this.setDvr(true);
      this.updateLiveEdge();
    }

    setDvr(on) {
      if (Boolean(this.dvr) === on) return;
      this.dvr = on;
      this.note(on ? "dvr" : "dvr off");
      if (this.hls) this.hls.config.liveMaxLatencyDuration = on ? DVR_NO_CATCH_UP_S : undefined;
    }

    updateLiveEdge() {
      if (this.config.mode !== "live") return;
      const behind = this.behindEdge();
      if (this.jumpButton) this.jumpButton.hidden = !behind;
      if (this.badge && this.live) {
        this.badge.classList.toggle("behind", behind);
        this.badge.dataset.edge = String(!behind);
        this.badge.title = behind ? "Behind the live edge: Go live to catch up" : "At the live edge";
      }
    }
  }

  const root = document.getElementById("player-root");
  const configNode = document.getElementById("player-config");
  if (!root || !configNode) return;
  window.livePlayer = new LivePlayer(root, JSON.parse(configNode.textContent));
})();
