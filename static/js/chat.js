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
      }
    });
    s.on("viewers.count", function (f) {
      self.viewersEl.textContent = f.count + (f.count === 1 ? " watching" : " watching");
    });
    s.on("error", function (f) { self.onError(f); });
    if (s.isOpen()) this.setStatus("live", "is-open");

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
    messages.forEach(function (m) { self.add(m); });
  };

  ChatPanel.prototype.atBottom = function () {
    return this.list.scrollHeight - this.list.scrollTop - this.list.clientHeight < 40;
  };

  ChatPanel.prototype.scrollDown = function () {
    this.list.scrollTop = this.list.scrollHeight;
    this.moreEl.hidden = true;
  };

  ChatPanel.prototype.add = function (m) {
    if (!m || typeof m.id !== "number" || this.rows.has(m.id)) return; // dedupe by id
    var stick = this.atBottom();
    var li = el("li", "chat-row");
    li.dataset.id = String(m.id);
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

  function init() {
    document.querySelectorAll("[data-chat-panel]").forEach(function (root) {
      if (!root.chatPanel) root.chatPanel = new ChatPanel(root);
    });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
