/*
 * The watch page's live socket and the chat panel (templates/chat/panel.html).
 *
 * window.LiveSocket: the page's ONE socket (opened by the chat panel), used directly:
 *   LiveSocket.on(type, fn), .off(type, fn), .onOpen(fn), .send(obj), .isOpen(), .socket()
 *   (handlers registered before the panel opens the socket are attached when it does).
 * window.LiveSocket.forStream(id) -> the socket object for /ws/streams/<id>/chat/:
 *   .on(type, fn) / .off(type, fn)  frames by "type" ("chat.message" also for each message of
 *                                   a "chat.batch"; "*" gets every frame; "socket.open" and
 *                                   "socket.closed" report the connection)
 *   .send(obj) -> bool               false while disconnected
 *   .isOpen()
 * It reconnects by itself (backoff 0.5 s .. 10 s, jittered; 15-30 s after 4429 "too many sockets
 * from your address") except after 4401/4404 closes, also when no frame (not even the server's
 * 15 s "heartbeat") arrived for 40 s. After 4008 ("too slow": it did not read its frames) it
 * reconnects like after any drop and the history frame catches it up.
 * The page's other scripts may also wait for document event "livesocket:ready" (detail.socket).
 *
 * Latency-synced chat (ADR 0035, docs/chat.md): every message carries "pdt", the stream's
 * program date-time when it was sent. With sync on (the default; the panel's "Sync to video"
 * toggle, remembered in localStorage "chat.sync"), a message is held until the viewer's own
 * playback reaches that moment (window.livePlayer.playingDate(), i.e. hls.js playingDate), also
 * while the video is paused. Shown at once: to the streamer and moderators, the sender's own
 * messages, and whenever the player knows no program date-time (offline, a stream without
 * date-times, or still none 15 s after the page opened). While a live video is starting, the
 * history's recent messages wait for its position too. Deletions and clears remove held
 * messages too.
 *
 * Safety: every piece of server text goes into the DOM through textContent / createTextNode,
 * never innerHTML (tests/chat/test_panel.py checks this file for HTML sinks).
 */
(function () {
  "use strict";

  var sockets = {};
  var SILENCE_MS = 40000;

  function LiveSocket(streamId) {
    this.streamId = streamId;
    this.handlers = {};
    this.ws = null;
    this.attempt = 0;
    this.stopped = false;
    this.connect();
  }

  LiveSocket.prototype.url = function () {
    var scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    return scheme + window.location.host + "/ws/streams/" + this.streamId + "/chat/";
  };

  LiveSocket.prototype.connect = function () {
    var self = this;
    var ws = new WebSocket(this.url());
    this.ws = ws;
    ws.onopen = function () {
      self.attempt = 0;
      self.emit("socket.open", { type: "socket.open" });
    };
    ws.onmessage = function (event) {
      self.lastFrameAt = Date.now();
      var frame;
      try {
        frame = JSON.parse(event.data);
      } catch (e) {
        return;
      }
      if (!frame || typeof frame.type !== "string") return;
      if (frame.type === "chat.batch" && Array.isArray(frame.messages)) {
        frame.messages.forEach(function (m) { self.emit("chat.message", m); });
        self.emit("*", frame);
        return;
      }
      self.emit(frame.type, frame);
      self.emit("*", frame);
    };
    ws.onclose = function (event) {
      if (self.ws !== ws) return;
      self.lost(event.code);
    };
    this.lastFrameAt = Date.now();
    if (!this.watchdog) {
      // The server sends a frame at least every 15 s ("heartbeat"); silence means the
      // network dropped without a close: give up on this socket and reconnect.
      this.watchdog = window.setInterval(function () {
        if (self.ws && self.ws.readyState === WebSocket.OPEN && Date.now() - self.lastFrameAt > SILENCE_MS) {
          var dead = self.ws;
          self.lost(4000);
          try { dead.close(); } catch (e) { /* already closing */ }
        }
      }, 5000);
    }
  };

  LiveSocket.prototype.lost = function (code) {
    var self = this;
    this.ws = null;
    this.emit("socket.closed", { type: "socket.closed", code: code });
    if (this.stopped || code === 4401 || code === 4404) return;
    var delay = Math.min(10000, 500 * Math.pow(2, this.attempt));
    // 4429: too many sockets from this address (docs/chat.md); retry, but slowly.
    if (code === 4429) delay = 30000;
    this.attempt += 1;
    window.setTimeout(function () { self.connect(); }, delay / 2 + Math.random() * delay / 2);
  };

  LiveSocket.prototype.on = function (type, fn) {
    (this.handlers[type] = this.handlers[type] || []).push(fn);
    return this;
  };

  LiveSocket.prototype.off = function (type, fn) {
    var list = this.handlers[type] || [];
    var i = list.indexOf(fn);
    if (i >= 0) list.splice(i, 1);
    return this;
  };

  LiveSocket.prototype.emit = function (type, frame) {
    (this.handlers[type] || []).slice().forEach(function (fn) {
      try {
        fn(frame);
      } catch (e) {
        if (window.console) window.console.error(e);
      }
    });
  };

  LiveSocket.prototype.isOpen = function () {
    return !!this.ws && this.ws.readyState === WebSocket.OPEN;
  };

  LiveSocket.prototype.send = function (obj) {
    if (!this.isOpen()) return false;
    this.ws.send(JSON.stringify(obj));
    return true;
  };

  /* Test hook and "drop the network" simulation: close without stopping reconnects. */
  LiveSocket.prototype.drop = function () {
    if (this.ws) this.ws.close();
  };

  // Page-level facade: the watch page has one socket (the first one opened, by the chat
  // panel). Handlers registered before it exists are attached when it opens.
  var pageSocket = null;
  var early = [];

  window.LiveSocket = {
    forStream: function (streamId) {
      var key = String(streamId);
      if (!sockets[key]) {
        sockets[key] = new LiveSocket(key);
        if (!pageSocket) {
          pageSocket = sockets[key];
          early.forEach(function (h) { pageSocket.on(h[0], h[1]); });
          early = [];
        }
        document.dispatchEvent(new CustomEvent("livesocket:ready", { detail: { socket: sockets[key], streamId: key } }));
      }
      return sockets[key];
    },
    on: function (type, fn) {
      if (pageSocket) pageSocket.on(type, fn);
      else early.push([type, fn]);
      return this;
    },
    off: function (type, fn) {
      if (pageSocket) pageSocket.off(type, fn);
      early = early.filter(function (h) { return h[0] !== type || h[1] !== fn; });
      return this;
    },
    onOpen: function (fn) { return this.on("socket.open", fn); },
    send: function (obj) { return !!pageSocket && pageSocket.send(obj); },
    isOpen: function () { return !!pageSocket && pageSocket.isOpen(); },
    socket: function () { return pageSocket; }
  };

  /* ---------------------------------------------------------------- chat panel */

  var MAX_ROWS = 500;
  var SYNC_KEY = "chat.sync";
  var SYNC_TICK_MS = 100;
  var MAX_HELD = 2000;
  // Before the player knows its position (page just opened, video starting), recent messages
  // are held too: the viewer starts behind live and would otherwise read what is still ahead.
  // At most this long after the page opened; then, still without a position, they show.
  var START_WAIT_MS = 15000;
  var RECENT_MS = 60000; // "recent": sent this close to now (older ones are behind any viewer)

  function storedSync() {
    try {
      return window.localStorage.getItem(SYNC_KEY) !== "off";
    } catch (e) {
      return true; // storage disabled: sync stays on for this page
    }
  }

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function csrfToken(panel) {
    var input = panel.querySelector("input[name=csrfmiddlewaretoken]");
    if (input && input.value) return input.value;
    var match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    return match ? decodeURIComponent(match[1]) : "";
  }

  function ChatPanel(root) {
    this.root = root;
    this.streamId = root.getAttribute("data-stream-id");
    this.meName = root.getAttribute("data-me") || null;
    this.me = { user: this.meName, can_moderate: false, banned: false };
    this.rows = new Map(); // message id -> <li>
    this.list = root.querySelector("[data-role=messages]");
    this.statusEl = root.querySelector("[data-role=status]");
    this.viewersEl = root.querySelector("[data-role=viewers]");
    this.noticeEl = root.querySelector("[data-role=notice]");
    this.moreEl = root.querySelector("[data-role=more]");
    this.slowEl = root.querySelector("[data-role=slow]");
    this.modbar = root.querySelector("[data-role=modbar]");
    this.form = root.querySelector("[data-role=form]");
    this.input = root.querySelector("[data-role=input]");
    this.api = "/api/v1/streams/" + this.streamId + "/chat/";
    this.socket = window.LiveSocket.forStream(this.streamId);
    this.lastText = "";
    this.fresh = new Set(); // ids received live on the current connection
    this.held = new Map(); // id -> message waiting for the viewer's playback to reach its pdt
    this.heldEl = root.querySelector("[data-role=held]");
    this.syncInput = root.querySelector("[data-role=sync]");
    this.sync = storedSync();
    this.syncTimer = null;
    this.openedAt = Date.now();
    this.root.dataset.sync = this.sync ? "on" : "off";
    this.bind();
  }

  ChatPanel.prototype.bind = function () {
    var self = this;
    var s = this.socket;
    s.on("socket.open", function () {
      self.fresh = new Set();
      self.setStatus("live", "is-open");
    });
    s.on("socket.closed", function (f) {
      var status = f.code === 4404 ? "no such stream" : f.code === 4429 ? "too many open pages; retrying…" : "reconnecting…";
      self.setStatus(status, "is-closed");
    });
    s.on("chat.history", function (f) { self.onHistory(f); });
    s.on("chat.message", function (m) {
      if (m && typeof m.id === "number") self.fresh.add(m.id);
      self.add(m);
    });
    s.on("chat.delete", function (f) { self.remove(f.id); });
    s.on("chat.clear", function (f) {
      self.rows.forEach(function (li) { li.remove(); });
      self.rows.clear();
      self.held.clear();
      self.updateHeld();
      self.system("Chat was cleared" + (f.by ? " by " + f.by : "") + ".");
    });
    s.on("chat.settings", function (f) { self.setSlowMode(f.slow_mode_s); });
    s.on("chat.ban", function (f) {
      if (f.user === self.meName) {
        self.me.banned = true;
        self.setBanned(f.until);
      }
      self.system(f.user + (f.until ? " was timed out." : " was banned."));
    });
    s.on("chat.unban", function (f) {
      if (f.user === self.meName) {
        self.me.banned = false;
        self.setBanned(null, true);
      }
    });
    s.on("chat.moderator", function (f) {
      if (f.user === self.meName) {
        self.me.can_moderate = !!f.moderator;
        self.modbar.hidden = !self.me.can_moderate;
        self.release();
      }
    });
    s.on("viewers.count", function (f) {
      self.viewersEl.textContent = f.count + (f.count === 1 ? " watching" : " watching");
    });
    s.on("error", function (f) { self.onError(f); });
    if (s.isOpen()) this.setStatus("live", "is-open");
    if (this.syncInput) {
      this.syncInput.checked = this.sync;
      this.syncInput.addEventListener("change", function () { self.setSync(self.syncInput.checked); });
    }

    if (this.form) {
      this.form.addEventListener("submit", function (event) {
        event.preventDefault();
        var text = self.input.value.trim();
        if (!text) return;
        if (!self.socket.send({ type: "chat.message", text: text })) {
          self.notice("Not connected; reconnecting…");
          return;
        }
        self.lastText = text;
        self.input.value = "";
      });
    }
    this.list.addEventListener("scroll", function () {
      if (self.atBottom()) self.moreEl.hidden = true;
    });
    this.moreEl.addEventListener("click", function () { self.scrollDown(); });
    var slow = this.root.querySelector("[data-role=slow-mode]");
    slow.addEventListener("change", function () {
      self.call("PATCH", "settings/", { slow_mode_s: parseInt(slow.value, 10) });
    });
    this.root.querySelector("[data-role=clear]").addEventListener("click", function () {
      if (window.confirm("Clear the chat for everyone?")) self.call("POST", "clear/");
    });
    document.addEventListener("click", function (event) {
      if (!event.target.closest || !event.target.closest(".chat-mod-menu, .chat-mod-toggle")) self.closeMenus();
    });
  };

  ChatPanel.prototype.setStatus = function (text, cls) {
    this.statusEl.textContent = text;
    this.statusEl.className = "chat-status " + cls;
  };

  ChatPanel.prototype.onHistory = function (f) {
    var self = this;
    this.me = f.me || this.me;
    this.modbar.hidden = !this.me.can_moderate;
    this.setSlowMode(f.slow_mode_s);
    if (this.me.banned) this.setBanned(this.me.banned_until);
    if (this.input && f.max_length) this.input.maxLength = f.max_length;
    var messages = f.messages || [];
    var ids = new Set(messages.map(function (m) { return m.id; }));
    // After a reconnect: a row the history should contain (not older than its oldest message)
    // but does not was deleted while we were away. Rows that arrived live on this connection
    // are newer than the history query and stay.
    var oldest = messages.length ? messages[0].id : -Infinity;
    var fresh = this.fresh;
    this.rows.forEach(function (li, id) {
      if (id >= oldest && !ids.has(id) && !fresh.has(id)) self.remove(id);
    });
    this.held.forEach(function (m, id) {
      if (id >= oldest && !ids.has(id) && !fresh.has(id)) self.remove(id);
    });
    messages.forEach(function (m) { self.add(m); });
    this.release(); // "me" may have changed (a moderator now): their held messages show
  };

  ChatPanel.prototype.atBottom = function () {
    return this.list.scrollHeight - this.list.scrollTop - this.list.clientHeight < 40;
  };

  ChatPanel.prototype.scrollDown = function () {
    this.list.scrollTop = this.list.scrollHeight;
    this.moreEl.hidden = true;
  };

  /* ---- latency sync (ADR 0035) ---- */

  // The viewer's playback position as a program date-time (ms), or null when unknown.
  ChatPanel.prototype.playingDate = function () {
    var player = window.livePlayer;
    if (!player || typeof player.playingDate !== "function") return null;
    try {
      var date = player.playingDate();
      return typeof date === "number" && isFinite(date) ? date : null;
    } catch (e) {
      return null;
    }
  };

  // True while ``m`` is ahead of what this viewer has seen.
  ChatPanel.prototype.ahead = function (m) {
    if (!this.sync || this.me.can_moderate) return false;
    if (this.meName && m.user === this.meName) return false;
    var pdt = Date.parse(m.pdt);
    if (!isFinite(pdt)) return false;
    var playing = this.playingDate();
    if (playing === null) return this.starting() && pdt > Date.now() - RECENT_MS;
    return playing < pdt;
  };

  // True while the live video is on its way but has no position yet (not offline, and not
  // longer than START_WAIT_MS after the page opened).
  ChatPanel.prototype.starting = function () {
    var player = window.livePlayer;
    if (!player || !player.root || Date.now() - this.openedAt > START_WAIT_MS) return false;
    var state = player.root.dataset.state;
    return state === "loading" || state === "starting" || state === "playing";
  };

  ChatPanel.prototype.add = function (m) {
    if (!m || typeof m.id !== "number" || this.rows.has(m.id) || this.held.has(m.id)) return; // dedupe by id
    if (this.ahead(m)) {
      this.held.set(m.id, m);
      while (this.held.size > MAX_HELD) this.held.delete(this.held.keys().next().value); // paused for ages
      this.updateHeld();
      return;
    }
    this.show(m);
  };

  // Show every held message the viewer's playback has reached (all of them when sync is off
  // or the position is unknown), in id order.
  ChatPanel.prototype.release = function () {
    var self = this;
    var due = [];
    this.held.forEach(function (m) {
      if (!self.ahead(m)) due.push(m);
    });
    due.sort(function (a, b) { return a.id - b.id; });
    due.forEach(function (m) {
      self.held.delete(m.id);
      self.show(m);
    });
    this.updateHeld();
  };

  ChatPanel.prototype.updateHeld = function () {
    var self = this;
    var count = this.held.size;
    if (this.heldEl) {
      this.heldEl.hidden = !count;
      this.heldEl.textContent = count ? count + (count === 1 ? " message waits" : " messages wait") + " for your video to catch up" : "";
    }
    this.root.dataset.held = String(count);
    if (count && !this.syncTimer) {
      this.syncTimer = window.setInterval(function () { self.release(); }, SYNC_TICK_MS);
    } else if (!count && this.syncTimer) {
      window.clearInterval(this.syncTimer);
      this.syncTimer = null;
    }
  };

  ChatPanel.prototype.setSync = function (on) {
    this.sync = !!on;
    if (this.syncInput) this.syncInput.checked = this.sync;
    try {
      window.localStorage.setItem(SYNC_KEY, this.sync ? "on" : "off");
    } catch (e) { /* storage disabled: this page only */ }
    this.root.dataset.sync = this.sync ? "on" : "off";
    this.release();
  };

  ChatPanel.prototype.show = function (m) {
    var stick = this.atBottom();
    var li = el("li", "chat-row");
    li.dataset.id = String(m.id);
    if (m.pdt) li.dataset.pdt = m.pdt;
    li.dataset.user = m.user;
    (m.badges || []).forEach(function (b) {
      li.appendChild(el("span", "chat-badge chat-badge-" + String(b).replace(/[^a-z]/g, ""), b));
    });
    var name = el("span", "chat-name", m.display_name || m.user);
    name.title = m.user;
    li.appendChild(name);
    li.appendChild(el("span", "chat-text", m.text));
    if (this.me.can_moderate && m.user !== this.meName) li.appendChild(this.modToggle(m));
    // Keep id order (history overlapping live frames may arrive out of order).
    var next = null;
    var children = this.list.children;
    for (var i = children.length - 1; i >= 0; i--) {
      var cid = parseInt(children[i].dataset.id || "0", 10);
      if (!children[i].dataset.id) continue;
      if (cid < m.id) break;
      next = children[i];
    }
    this.list.insertBefore(li, next);
    this.rows.set(m.id, li);
    while (this.rows.size > MAX_ROWS) {
      var first = this.rows.keys().next().value;
      this.remove(first);
    }
    if (stick) this.scrollDown();
    else this.moreEl.hidden = false;
  };

  ChatPanel.prototype.remove = function (id) {
    if (this.held.delete(id)) this.updateHeld();
    var li = this.rows.get(id);
    if (li) li.remove();
    this.rows.delete(id);
  };

  ChatPanel.prototype.system = function (text) {
    var stick = this.atBottom();
    var li = el("li", "chat-system", text);
    this.list.appendChild(li);
    if (stick) this.scrollDown();
  };

  ChatPanel.prototype.modToggle = function (m) {
    var self = this;
    var button = el("button", "chat-mod-toggle", "⋯");
    button.type = "button";
    button.setAttribute("aria-label", "Moderate " + m.user);
    button.addEventListener("click", function (event) {
      event.stopPropagation();
      self.closeMenus();
      var menu = el("div", "chat-mod-menu");
      [
        ["Delete message", function () { self.call("DELETE", "messages/" + m.id + "/"); }],
        ["Time out 10 min", function () { self.call("POST", "bans/", { user: m.user, duration_s: 600 }); }],
        ["Ban from chat", function () {
          if (window.confirm("Ban " + m.user + " from this chat?")) self.call("POST", "bans/", { user: m.user });
        }]
      ].forEach(function (item) {
        var b = el("button", null, item[0]);
        b.type = "button";
        b.addEventListener("click", function () { self.closeMenus(); item[1](); });
        menu.appendChild(b);
      });
      button.parentNode.appendChild(menu);
    });
    return button;
  };

  ChatPanel.prototype.closeMenus = function () {
    this.root.querySelectorAll(".chat-mod-menu").forEach(function (m) { m.remove(); });
  };

  ChatPanel.prototype.call = function (method, path, body) {
    var self = this;
    var options = {
      method: method,
      credentials: "same-origin",
      headers: { "X-CSRFToken": csrfToken(this.root), Accept: "application/json" }
    };
    if (body !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    return window.fetch(this.api + path, options).then(function (response) {
      if (response.ok) return null;
      return response.json().then(function (data) {
        self.notice((data && data.error && data.error.message) || "That did not work.");
      }, function () {
        self.notice("That did not work (" + response.status + ").");
      });
    }, function () {
      self.notice("Network error; try again.");
    });
  };

  ChatPanel.prototype.setSlowMode = function (seconds) {
    seconds = seconds || 0;
    this.slowEl.hidden = !seconds;
    this.slowEl.textContent = seconds ? "Slow mode: one message every " + seconds + " s." : "";
    var select = this.root.querySelector("[data-role=slow-mode]");
    if (select) select.value = String(seconds);
  };

  ChatPanel.prototype.setBanned = function (until, lifted) {
    var self = this;
    if (!this.form) return;
    window.clearTimeout(this.unbanTimer);
    if (until && !lifted) {
      // A timeout ends by itself: re-enable the input when it does.
      var ms = new Date(until).getTime() - Date.now();
      if (ms > 0 && ms < 2147483647) {
        this.unbanTimer = window.setTimeout(function () {
          self.me.banned = false;
          self.setBanned(null, true);
        }, ms + 500);
      }
    }
    this.input.disabled = !lifted;
    this.form.classList.toggle("is-disabled", !lifted);
    if (lifted) {
      this.notice(null);
      return;
    }
    this.notice(until ? "You are timed out until " + new Date(until).toLocaleTimeString() + "." : "You are banned from this chat.");
  };

  ChatPanel.prototype.onError = function (f) {
    this.notice(f.message || f.code);
    if (this.input && !this.input.value && ["too_long", "rate_limited", "slow_mode"].indexOf(f.code) >= 0) {
      this.input.value = this.lastText;
    }
    if (f.code === "banned" || f.code === "timed_out") {
      this.me.banned = true;
      this.input.disabled = true;
      this.form.classList.add("is-disabled");
      this.notice(f.message);
    }
  };

  ChatPanel.prototype.notice = function (text) {
    var self = this;
    window.clearTimeout(this.noticeTimer);
    this.noticeEl.hidden = !text;
    this.noticeEl.textContent = text || "";
    if (text && !this.me.banned) {
      this.noticeTimer = window.setTimeout(function () { self.noticeEl.hidden = true; }, 6000);
    }
  };

  /* ------------------------------------------------------- chat of a replay (ADR 0035) */

  // The replay page's chat (templates/chat/replay_panel.html): every visible message of the
  // session, loaded page by page from the API, shown up to the replay's position: the
  // player's playingDate against each message's "pdt" (or, without date-times, currentTime
  // against "offset_s"). Seeking either way re-renders; the WebVTT export is attached to the
  // video as a hidden "Chat" captions track.
  var REPLAY_ROWS = 300;
  var REPLAY_PAGES = 200; // at most 200 pages of 1000 messages

  function ReplayChatPanel(root) {
    this.root = root;
    this.list = root.querySelector("[data-role=messages]");
    this.statusEl = root.querySelector("[data-role=status]");
    this.messages = []; // in the order sent, each with .at (pdt, ms) and .offsetMs
    this.shown = -1; // how many of them are on screen (the first ``shown``)
    this.loaded = false;
    this.load(root.getAttribute("data-api") + "?page_size=1000", 0);
    this.attachTrack(root.getAttribute("data-vtt"));
    var self = this;
    window.setInterval(function () { self.tick(); }, SYNC_TICK_MS);
    var player = window.livePlayer;
    if (player && player.video) {
      ["seeked", "seeking", "timeupdate"].forEach(function (type) {
        player.video.addEventListener(type, function () { self.tick(); });
      });
    }
  }

  ReplayChatPanel.prototype.load = function (url, pages) {
    var self = this;
    window.fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (!response.ok) throw new Error(String(response.status));
        return response.json();
      })
      .then(function (data) {
        (data.results || []).forEach(function (m) {
          m.at = Date.parse(m.pdt);
          m.offsetMs = Math.round(Number(m.offset_s) * 1000);
          self.messages.push(m);
        });
        if (data.next && pages + 1 < REPLAY_PAGES) {
          self.load(data.next, pages + 1);
          return;
        }
        self.loaded = true;
        self.statusEl.textContent = self.messages.length + (self.messages.length === 1 ? " message" : " messages");
        self.shown = -1;
        self.tick();
      })
      .catch(function () {
        self.statusEl.textContent = "chat unavailable";
      });
  };

  ReplayChatPanel.prototype.attachTrack = function (src) {
    var player = window.livePlayer;
    if (!src || !player || !player.video) return;
    var track = document.createElement("track");
    track.kind = "captions";
    track.label = "Chat";
    track.srclang = "und";
    track.src = src;
    player.video.appendChild(track);
    if (track.track) track.track.mode = "hidden"; // loaded, off screen until the viewer picks it
  };

  // How many messages the replay has reached: sent at or before the moment on screen.
  ReplayChatPanel.prototype.reached = function () {
    var player = window.livePlayer;
    if (!player || !player.video) return 0;
    var date = typeof player.playingDate === "function" ? player.playingDate() : null;
    var key = date !== null ? "at" : "offsetMs";
    var now = date !== null ? date : Math.round(player.video.currentTime * 1000);
    var lo = 0;
    var hi = this.messages.length;
    while (lo < hi) { // first message after ``now`` (sorted by pdt, offsets follow pdt)
      var mid = (lo + hi) >> 1;
      if (this.messages[mid][key] <= now) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  };

  ReplayChatPanel.prototype.tick = function () {
    if (!this.loaded) return;
    var count = this.reached();
    if (count === this.shown) return;
    var i;
    if (this.shown >= 0 && count > this.shown && count - this.shown <= REPLAY_ROWS) {
      for (i = this.shown; i < count; i++) this.list.appendChild(this.row(this.messages[i]));
      while (this.list.children.length > REPLAY_ROWS) this.list.removeChild(this.list.firstChild);
    } else { // a seek (back, or far ahead): render the last rows up to the new position
      this.list.textContent = "";
      for (i = Math.max(0, count - REPLAY_ROWS); i < count; i++) this.list.appendChild(this.row(this.messages[i]));
    }
    this.shown = count;
    this.root.dataset.shown = String(count);
    this.list.scrollTop = this.list.scrollHeight;
  };

  ReplayChatPanel.prototype.row = function (m) {
    var li = el("li", "chat-row");
    li.dataset.id = String(m.id);
    li.dataset.pdt = m.pdt;
    li.dataset.offset = String(m.offset_s);
    (m.badges || []).forEach(function (b) {
      li.appendChild(el("span", "chat-badge chat-badge-" + String(b).replace(/[^a-z]/g, ""), b));
    });
    var name = el("span", "chat-name", m.display_name || m.user);
    name.title = m.user;
    li.appendChild(name);
    li.appendChild(el("span", "chat-text", m.text));
    return li;
  };

  function init() {
    document.querySelectorAll("[data-chat-panel]").forEach(function (root) {
      if (!root.chatPanel) root.chatPanel = new ChatPanel(root);
    });
    document.querySelectorAll("[data-replay-chat]").forEach(function (root) {
      if (!root.replayChat) root.replayChat = new ReplayChatPanel(root);
    });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
