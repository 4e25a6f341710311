// Wardengate console: the sessions view. A live stream (server-sent events) redraws the table
// and the Live strip whenever what they show changes; a row opens the detail that
// `wgctl session show` prints, with the actions the operator may take. Every change carries the
// console session's CSRF token; buttons the operator may not use are not shown (and the API
// refuses them anyway). Nothing from the gateway is ever parsed as HTML.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const el = (tag, attrs, ...kids) => {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") e.className = v;
      else if (k.includes("-")) e.setAttribute(k, v); // data-*, aria-*
      else e[k] = v;
    }
    for (const k of kids) e.append(k);
    return e;
  };
  let me = null;
  let source = null;
  let last = null;
  const open = new Set();
  const details = new Map();
  // Shadows being watched, by session: their panel (kept across redraws) and how to stop.
  const shadows = new Map();
  const may = (p) => me && me.can.includes(p);
  const liveStates = ["active", "approved", "paused", "awaiting_approval", "pending", "canceling"];

  async function api(method, path, body) {
    const r = await fetch(path, { method, credentials: "same-origin",
      headers: { "content-type": "application/json", "x-csrf-token": me ? me.csrf : "" },
      body: body === undefined ? undefined : JSON.stringify(body) });
    if (r.status === 401) { location.replace("/console/login"); throw new Error("signed out"); }
    const text = await r.text();
    let v = null;
    try { v = JSON.parse(text); } catch (_) { v = text; }
    if (!r.ok) {
      const err = new Error((v && v.error) || ("the gateway answered " + r.status));
      err.body = v;
      throw err;
    }
    return v;
  }

  function human(secs) {
    if (secs < 120) return secs + "s";
    if (secs < 7200) return Math.floor(secs / 60) + "m";
    if (secs < 172800) return Math.floor(secs / 3600) + "h " + Math.floor((secs % 3600) / 60) + "m";
    return Math.floor(secs / 86400) + "d";
  }
  function bytes(n) {
    if (n < 1024) return n + " B";
    if (n < 1048576) return (n / 1024).toFixed(1) + " KiB";
    return (n / 1048576).toFixed(1) + " MiB";
  }
  // Idle time from the last input (the live stream leaves idle_secs at 0 so that an unchanged
  // list is not sent again every second).
  function idle(s) {
    const from = Date.parse(s.last_input_at || s.started_at);
    return isNaN(from) ? 0 : Math.max(0, Math.round((Date.now() - from) / 1000));
  }
  function age(s) {
    const start = Date.parse(s.started_at);
    const end = s.ended_at ? Date.parse(s.ended_at) : Date.now();
    return isNaN(start) ? "" : human(Math.max(0, Math.round((end - start) / 1000)));
  }

  function params() {
    const q = new URLSearchParams();
    for (const f of new FormData($("filters"))) {
      const [k, v] = f;
      if (v) q.set(k, String(v).trim());
    }
    return q;
  }

  function connect() {
    if (source) source.close();
    const q = params();
    history.replaceState(null, "", "/console" + (q.toString() ? "#" + q.toString() : ""));
    source = new EventSource("/api/v1/console/events?" + q.toString());
    $("conn").dataset.state = "connecting";
    $("conn").textContent = "connecting";
    source.addEventListener("open", () => { $("conn").dataset.state = "live"; $("conn").textContent = "live"; });
    source.addEventListener("error", () => { $("conn").dataset.state = "down"; $("conn").textContent = "reconnecting"; });
    source.addEventListener("signed_out", () => { source.close(); location.replace("/console/login"); });
    source.addEventListener("sessions", (ev) => {
      last = JSON.parse(ev.data);
      draw();
    });
    updateBulk();
  }

  function visible() {
    return last ? last.list.sessions : [];
  }

  function draw() {
    const st = last.strip;
    $("s-active").textContent = st.active;
    $("s-awaiting").textContent = st.awaiting_approval;
    $("s-idle").textContent = st.idle_10m;
    $("s-shadowed").textContent = st.shadowed;
    const rows = visible();
    const body = $("sessions").tBodies[0];
    const kids = [];
    for (const s of rows) {
      const tr = el("tr", { class: "row", tabIndex: 0, "data-id": s.id, "data-state": s.state },
        el("td", { class: "mono" }, s.id),
        el("td", {}, el("span", { class: "badge", "data-state": s.state }, s.state.replace("_", " "))),
        el("td", {}, s.protocol),
        el("td", {}, s.actor),
        // A TCP session has no account (the client brings its own credentials): its host instead.
        el("td", {}, s.target + (s.tcp ? " (" + s.tcp.host_id + ")" : s.account ? " (" + s.account + ")" : "")),
        el("td", {}, s.policy || ""),
        el("td", { class: "num" }, age(s)),
        el("td", { class: "num" }, liveStates.includes(s.state) ? human(idle(s)) : ""),
        el("td", { class: "num" }, bytes(s.bytes_in) + " / " + bytes(s.bytes_out)));
      if (s.observers && s.observers.length) tr.classList.add("shadowed");
      tr.session = s;
      tr.setAttribute("aria-expanded", open.has(s.id) ? "true" : "false");
      tr.addEventListener("click", () => toggle(s.id));
      tr.addEventListener("keydown", (e) => {
        if (e.key === "Enter" || e.key === " ") { e.preventDefault(); toggle(s.id); }
      });
      kids.push(tr);
      if (open.has(s.id)) kids.push(detailRow(s));
    }
    // Keyboard users keep their place across redraws.
    const focused = document.activeElement && document.activeElement.dataset
      ? document.activeElement.dataset.id : null;
    body.replaceChildren(...kids);
    if (focused) {
      const again = body.querySelector("tr.row[data-id=\"" + CSS.escape(focused) + "\"]");
      if (again) again.focus();
    }
    $("empty").hidden = rows.length > 0;
    const more = last.list.more ? " (" + last.list.more + " more not shown)" : "";
    $("count").textContent = rows.length + " shown" + more;
    updateBulk();
  }

  // Age and idle time move every second without the list changing: updated in place.
  setInterval(() => {
    for (const tr of document.querySelectorAll("#sessions tr.row")) {
      const s = tr.session;
      if (!s) continue;
      tr.cells[6].textContent = age(s);
      tr.cells[7].textContent = liveStates.includes(s.state) ? human(idle(s)) : "";
    }
  }, 1000);

  function detailRow(s) {
    const pre = el("pre", { class: shadows.has(s.id) ? "detail short" : "detail" });
    const known = details.get(s.id);
    pre.textContent = known && known.state === s.state ? known.text : "loading…";
    if (!known || known.state !== s.state || known.bytes !== s.bytes_in + s.bytes_out) {
      api("GET", "/api/v1/sessions/" + encodeURIComponent(s.id) + "?format=text").then((t) => {
        details.set(s.id, { state: s.state, bytes: s.bytes_in + s.bytes_out, text: t });
        pre.textContent = t;
      }).catch((e) => { pre.textContent = e.message; });
    }
    const actions = el("div", { class: "actions" });
    const live = liveStates.includes(s.state);
    const watching = shadows.get(s.id);
    if (watching) {
      actions.append(el("button", { class: "ghost", onclick: () => stopShadow(s.id) }, "Stop shadowing"));
    } else if (live && s.protocol !== "tcp" && may("session.shadow")) {
      actions.append(el("button", { class: "ghost", onclick: () => shadow(s) }, "Shadow"));
    }
    // A TCP session's bytes belong to the client's own protocol: nothing to watch or hand over.
    if (live && s.protocol !== "tcp" && may("session.handoff")) {
      actions.append(el("button", { class: "ghost", onclick: () => handoff(s) }, "Handoff…"));
    }
    if (live && may("session.terminate")) {
      actions.append(el("button", { class: "danger", onclick: () => terminate(s) }, "Terminate…"));
    }
    const td = el("td", { colSpan: 9 }, pre);
    if (watching) td.append(watching.panel);
    td.append(timelineOf(s), actions);
    return el("tr", { class: "expanded" }, td);
  }

  // Watch a session from the same shadow stream `wgctl session shadow` reads: a terminal
  // (xterm.js) for SSH, the query log for PostgreSQL; a desktop opens the gateway's viewer.
  async function shadow(s) {
    if (s.protocol === "rdp") {
      try {
        const l = await api("POST", "/api/v1/sessions/" + encodeURIComponent(s.id) + "/shadow/browser");
        window.open(l.url, "_blank", "noopener");
      } catch (e) { alert(e.message); }
      return;
    }
    const status = el("div", { class: "shadow-status" }, "attaching…");
    const screen = el("div", { class: s.protocol === "ssh" ? "term" : "querylog" });
    const panel = el("div", { class: "shadow", "data-session": s.id }, status, screen);
    const abort = new AbortController();
    const w = { panel, abort, term: null, status };
    shadows.set(s.id, w);
    open.add(s.id);
    if (last) draw();
    if (s.protocol === "ssh") {
      w.term = new Terminal({ convertEol: false, disableStdin: true, cursorBlink: false,
        fontSize: 13, cols: 100, rows: 30, theme: { background: "#0d0f12" } });
      w.term.open(screen);
    }
    const bytes = (b64) => Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    const handle = (ev) => {
      switch (ev.type) {
        case "attached":
          status.textContent = "Watching " + ev.actor + " on " + ev.target + " (" + ev.banner +
            ", from " + ev.at + ")";
          break;
        case "screen":
          if (w.term) { w.term.reset(); w.term.resize(ev.cols, ev.rows); w.term.write(bytes(ev.data)); }
          break;
        case "output":
          if (w.term) w.term.write(bytes(ev.data));
          break;
        case "line":
          screen.append(el("div", {}, ev.text));
          screen.scrollTop = screen.scrollHeight;
          break;
        case "notice":
          status.textContent = ev.text;
          break;
        case "end":
          status.textContent = "Session over: " + ev.reason;
          break;
      }
    };
    try {
      const r = await fetch("/api/v1/sessions/" + encodeURIComponent(s.id) + "/shadow",
        { credentials: "same-origin", signal: abort.signal });
      if (!r.ok) {
        const v = await r.json().catch(() => ({}));
        throw new Error(v.error || ("the gateway answered " + r.status));
      }
      const reader = r.body.getReader();
      const text = new TextDecoder();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += text.decode(value, { stream: true });
        let nl;
        while ((nl = buf.indexOf("\n")) >= 0) {
          const lineText = buf.slice(0, nl);
          buf = buf.slice(nl + 1);
          if (lineText.trim()) handle(JSON.parse(lineText));
        }
      }
    } catch (e) {
      if (e.name !== "AbortError") status.textContent = e.message;
    }
  }

  function stopShadow(id) {
    const w = shadows.get(id);
    if (!w) return;
    w.abort.abort();
    if (w.term) w.term.dispose();
    shadows.delete(id);
    if (last) draw();
  }

  // The session's timeline (audit and recording markers), fetched again when its state moves.
  const timelines = new Map();
  function timelineOf(s) {
    const box = el("ol", { class: "timeline", "aria-label": "Timeline" });
    const fill = (t) => box.replaceChildren(...t.entries.map((e) =>
      el("li", { "data-source": e.source },
        el("span", { class: "t" }, e.offset),
        el("span", { class: "k" }, e.kind),
        el("span", { class: "x" }, (e.actor ? e.actor + ": " : "") + e.text))));
    const known = timelines.get(s.id);
    if (known) fill(known.t);
    if (!known || known.state !== s.state || known.observers !== (s.observers || []).length) {
      api("GET", "/api/v1/sessions/" + encodeURIComponent(s.id) + "/timeline").then((t) => {
        timelines.set(s.id, { state: s.state, observers: (s.observers || []).length, t });
        fill(t);
      }).catch(() => {});
    }
    return box;
  }

  function toggle(id) {
    if (open.has(id)) { open.delete(id); stopShadow(id); } else open.add(id);
    if (last) draw();
  }

  // The reason dialog: resolves with {reason, to} or null when cancelled.
  function ask(title, text, okLabel, withTo, label) {
    const d = $("ask");
    $("ask-reason-label").textContent = label || "Reason (audited, and shown to the person)";
    $("ask-title").textContent = title;
    $("ask-text").textContent = text;
    $("ask-ok").textContent = okLabel;
    $("ask-to").hidden = $("ask-to-label").hidden = !withTo;
    $("ask-to").required = !!withTo;
    $("ask-to").value = "";
    $("ask-reason").value = "";
    d.showModal();
    (withTo ? $("ask-to") : $("ask-reason")).focus();
    return new Promise((resolve) => {
      d.addEventListener("close", () => {
        resolve(d.returnValue === "ok" && $("ask-reason").value.trim()
          ? { reason: $("ask-reason").value.trim(), to: $("ask-to").value.trim() } : null);
      }, { once: true });
    });
  }

  async function terminate(s) {
    const a = await ask("Terminate " + s.id, s.actor + " on " + s.target +
      ": the connection ends now and they see the reason.", "Terminate", false);
    if (!a) return;
    try {
      await api("POST", "/api/v1/sessions/" + encodeURIComponent(s.id) + "/terminate", { reason: a.reason });
    } catch (e) { alert(e.message); }
  }

  async function handoff(s) {
    const a = await ask("Hand off " + s.id, "Offer " + s.actor + "'s session on " + s.target +
      " to another person; it moves when they accept.", "Offer", true);
    if (!a) return;
    try {
      await api("POST", "/api/v1/sessions/" + encodeURIComponent(s.id) + "/handoff", { to: a.to, reason: a.reason });
    } catch (e) { alert(e.message); }
  }

  function selectors() {
    const q = params();
    const sel = {};
    for (const k of ["actor", "target_tag", "protocol"]) if (q.get(k)) sel[k] = q.get(k);
    return sel;
  }
  // Bulk terminate selects by actor, tag and protocol, as the API does: it is offered only when
  // the view is exactly such a selection (no policy, state, idle or shadowed filter) and the
  // list shows all of it, so the count is what ends.
  function updateBulk() {
    const sel = selectors();
    const q = params();
    const narrower = ["policy", "state", "idle_gt", "shadowed"].some((k) => q.get(k));
    const n = visible().filter((s) => ["active", "paused"].includes(s.state)).length;
    $("bulk").hidden = !may("session.terminate") || Object.keys(sel).length === 0 || narrower ||
      !!(last && last.list.more);
    $("bulk-terminate").textContent = "Terminate " + n + " matching…";
    $("bulk-terminate").disabled = n === 0;
  }
  async function bulkTerminate() {
    const sel = selectors();
    const n = visible().filter((s) => ["active", "paused"].includes(s.state)).length;
    const what = Object.entries(sel).map(([k, v]) => k + "=" + v).join(", ");
    const a = await ask("Terminate " + n + " sessions", "Every live session matching " + what +
      " ends now.", "Terminate " + n, false);
    if (!a) return;
    try {
      await api("POST", "/api/v1/sessions/terminate", Object.assign({ reason: a.reason }, sel));
    } catch (e) { alert(e.message); }
  }

  const view = ({ "/console": "sessions", "/console/recordings": "recordings",
    "/console/audit": "audit", "/console/approvals": "approvals",
    "/console/access": "access" })[location.pathname] || "sessions";

  // Saved views: the filters under a name, per operator; pinned ones sit above the list.
  function filterQuery() {
    const q = new URLSearchParams();
    for (const [k, v] of new FormData($("filters"))) if (String(v).trim()) q.set(k, String(v).trim());
    return q;
  }
  function apply(query) {
    $("filters").reset();
    for (const [k, v] of new URLSearchParams(query)) {
      const f = $("filters").elements.namedItem(k);
      if (f && f.type === "checkbox") f.checked = v === "true"; else if (f) f.value = v;
    }
    setTimeout(connect, 0);
  }
  async function loadQueries() {
    let list = [];
    try { list = await api("GET", "/api/v1/console/queries"); } catch (_) { return; }
    const path = (n) => "/api/v1/console/queries/" + encodeURIComponent(n);
    $("saved-list").replaceChildren(...list.map((q) => el("li", { "data-name": q.name },
      el("button", { class: "link", title: q.query, onclick: () => apply(q.query) }, q.name),
      el("button", { class: "icon", title: q.pinned ? "unpin" : "pin", "aria-label": (q.pinned ? "unpin " : "pin ") + q.name,
        onclick: async () => { await api("PUT", path(q.name), { query: q.query, pinned: !q.pinned }); loadQueries(); } },
        q.pinned ? "★" : "☆"),
      el("button", { class: "icon", title: "remove", "aria-label": "remove " + q.name,
        onclick: async () => { await api("DELETE", path(q.name)); loadQueries(); } }, "×"))));
    $("pinned").replaceChildren(...list.filter((q) => q.pinned).map((q) =>
      el("button", { class: "chip", title: q.query, onclick: () => apply(q.query) }, q.name)));
  }
  $("save-view").addEventListener("click", async () => {
    const q = filterQuery().toString();
    const a = await ask("Save this view", q ? "Filters: " + decodeURIComponent(q) : "No filters: every session.",
      "Save", false, "Name");
    if (!a) return;
    try {
      await api("PUT", "/api/v1/console/queries/" + encodeURIComponent(a.reason), { query: q, pinned: false });
    } catch (e) { alert(e.message); }
    loadQueries();
  });

  async function start() {
    try {
      me = await api("GET", "/api/v1/console/me");
    } catch (_) { return; }
    $("who").textContent = me.user;
    $("gateway").textContent = me.gateway;
    for (const a of document.querySelectorAll("#nav a")) {
      if (a.dataset.needs && !may(a.dataset.needs)) a.hidden = true;
      if (a.dataset.view === view) a.setAttribute("aria-current", "page");
    }
    $("view-" + view).hidden = false;
    $("conn").hidden = view !== "sessions";
    if (view === "recordings") return recordings();
    if (view === "audit") return audit();
    if (view === "approvals") return approvals();
    if (view === "access") return access(true);
    // Filters come back from the address (a shared or reloaded view).
    const q = new URLSearchParams(location.hash.slice(1));
    for (const [k, v] of q) {
      const f = $("filters").elements.namedItem(k);
      if (f && f.type === "checkbox") f.checked = v === "true"; else if (f) f.value = v;
    }
    if (!may("session.read")) {
      $("count").textContent = "You may not read sessions (session.read).";
      return;
    }
    connect();
    loadQueries();
  }

  const clock = (secs) => {
    const s = Math.max(0, Math.floor(secs));
    const p = (n) => String(n).padStart(2, "0");
    return p(Math.floor(s / 3600)) + ":" + p(Math.floor(s / 60) % 60) + ":" + p(s % 60);
  };
  const hexBytes = (h) => {
    const b = new Uint8Array(h.length / 2);
    for (let i = 0; i < b.length; i++) b[i] = parseInt(h.substr(i * 2, 2), 16);
    return b;
  };

  // Recordings: the list with each one's seal and verification; a terminal recording plays in
  // the page (speed, skip idle, seek), a database one is its query log, a desktop opens the
  // gateway's player. Every playback is audited by the gateway (recording.accessed).
  async function recordings() {
    let list;
    try { list = await api("GET", "/api/v1/recordings?limit=200"); } catch (e) {
      $("rec-count").textContent = e.message; return;
    }
    $("rec-count").textContent = list.recordings.length + " shown" +
      (list.more ? " (" + list.more + " more)" : "");
    const rows = list.recordings.map((r) => {
      const s = r.session || {};
      const seal = r.seal ? (r.seal.status || "sealed") : "live or unsealed";
      const verdict = el("td", {});
      const shown = (v) => {
        verdict.className = v.verified === false ? "bad" : "ok";
        verdict.textContent = v.verified === true ? "verified"
          : v.verified === false ? "FAILED: " + v.problems.join("; ") : "not sealed yet";
      };
      // Verifying reads the whole recording (and is audited): on request, and before playing.
      const verify = async () => {
        verdict.textContent = "verifying…";
        try { shown(await api("GET", "/api/v1/recordings/" + encodeURIComponent(r.id))); }
        catch (e) { verdict.className = "bad"; verdict.textContent = e.message; }
      };
      verdict.append(el("button", { class: "ghost", onclick: verify }, "Verify"));
      const playButton = el("button", { class: "ghost", onclick: () => { verify(); play(r); } }, "Play");
      return el("tr", { "data-id": r.id },
        el("td", { class: "mono" }, r.id), el("td", {}, s.actor || ""),
        el("td", {}, s.target || ""), el("td", {}, s.protocol || ""),
        el("td", {}, (s.started_at || "").replace("T", " ").slice(0, 19)),
        el("td", {}, seal), verdict, el("td", {}, playButton));
    });
    $("recordings").tBodies[0].replaceChildren(...rows);
  }

  let player = null;
  function closePlayer() {
    if (player) { clearInterval(player.timer); if (player.term) player.term.dispose(); }
    player = null;
    $("player").hidden = true;
  }
  $("player-close").addEventListener("click", closePlayer);

  async function play(r) {
    const s = r.session || {};
    if (s.protocol === "rdp") {
      try {
        const l = await api("POST", "/api/v1/recordings/" + encodeURIComponent(r.id) + "/replay/browser", { speed: 4 });
        window.open(l.url, "_blank", "noopener");
      } catch (e) { alert(e.message); }
      return;
    }
    closePlayer();
    const text = await fetch("/api/v1/recordings/" + encodeURIComponent(r.id) + "/events",
      { credentials: "same-origin" }).then((x) => x.ok ? x.text() : Promise.reject(new Error("the gateway answered " + x.status)))
      .catch((e) => { alert(e.message); return null; });
    if (text === null) return;
    const events = text.split("\n").filter((l) => l.trim()).map((l) => JSON.parse(l));
    $("player").hidden = false;
    $("player-title").textContent = r.id + " · " + (s.actor || "") + " on " + (s.target || "");
    // A TCP session reads as its transcript: each piece of data with its connection and
    // direction, control bytes escaped, and the connections opened and closed.
    const escape = (d) => d.replace(/[\x00-\x1f\x7f]/g, (c) => c === "\r" ? "\\r" : c === "\n" ? "\\n"
      : "\\x" + c.charCodeAt(0).toString(16).padStart(2, "0"));
    const queries = s.protocol === "tcp"
      ? events.filter((e) => e.type === "stream" || e.type === "marker").map((e) => e.type === "stream"
        ? { t: e.t, statement: "#" + e.connection + (e.from === "client" ? " > " : " < ") + escape(e.data || ""),
            tag: (e.data_hex || "").length / 2 + " bytes" }
        : { t: e.t, statement: "-- " + e.kind + " " + e.detail, tag: "" })
      : events.filter((e) => e.type === "query");
    const isQueries = s.protocol === "postgres" || s.protocol === "tcp";
    $("player-term").hidden = isQueries;
    $("player-queries").hidden = !isQueries;
    $("player-controls").hidden = isQueries;
    const tcp = s.protocol === "tcp";
    $("player-filter").placeholder = tcp ? "filter the transcript (e.g. SET, GET /)" : "filter statements (e.g. ALTER, billing)";
    const heads = document.querySelectorAll("#player-queries th");
    heads[1].textContent = tcp ? "Data" : "Statement";
    heads[3].textContent = tcp ? "Size" : "Result";
    if (isQueries) {
      const draw = () => {
        const f = $("player-filter").value.trim().toLowerCase();
        const rows = queries.filter((q) => !f || (q.statement || "").toLowerCase().includes(f))
          .map((q) => el("tr", { class: q.error || q.alert ? "alert" : "" },
            el("td", { class: "mono" }, clock(q.t)),
            el("td", { class: "mono stmt" }, q.statement || ""),
            el("td", { class: "num" }, q.duration_us === undefined ? "" : (q.duration_us / 1000).toFixed(1) + " ms"),
            el("td", {}, q.error ? "ERROR " + (q.sqlstate || "") + ": " + q.error
              : (q.alert ? "ALERT " + q.alert + " · " : "") + (q.tag || ""))));
        document.querySelector("#player-queries tbody").replaceChildren(...rows);
      };
      $("player-filter").oninput = draw;
      player = { timer: null, term: null };
      draw();
      return;
    }
    const output = events.filter((e) => e.type === "output" || e.type === "resize");
    const first = output.find((e) => e.type === "resize" && e.cols > 0);
    const term = new Terminal({ disableStdin: true, fontSize: 13, cols: first ? first.cols : 80,
      rows: first ? first.rows : 24, theme: { background: "#0d0f12" } });
    $("player-term").replaceChildren();
    term.open($("player-term"));
    const end = events.length ? events[events.length - 1].t : 0;
    player = { term, pos: 0, i: 0, playing: true, timer: null, end };
    const apply = (e) => {
      if (e.type === "resize") { if (e.cols > 0 && e.rows > 0) term.resize(e.cols, e.rows); }
      else term.write(hexBytes(e.data_hex));
    };
    const seek = (to) => {
      term.reset();
      player.i = 0;
      while (player.i < output.length && output[player.i].t <= to) apply(output[player.i++]);
      player.pos = to;
    };
    const show = () => {
      $("player-pos").textContent = clock(player.pos) + " / " + clock(end);
      $("player-seek").value = end ? Math.round(player.pos / end * 1000) : 0;
      $("player-play").textContent = player.playing ? "Pause" : (player.pos >= end ? "Replay" : "Play");
    };
    $("player-seek").oninput = () => { seek($("player-seek").value / 1000 * end); show(); };
    $("player-play").onclick = () => {
      if (player.pos >= end) seek(0);
      player.playing = !player.playing; show();
    };
    let lastTick = performance.now();
    player.timer = setInterval(() => {
      const now = performance.now();
      const dt = (now - lastTick) / 1000;
      lastTick = now;
      if (!player.playing) return;
      player.pos += dt * Number($("player-speed").value);
      const next = output[player.i];
      // Skip idle: a pause longer than a second passes in a second.
      if ($("player-skip").checked && next && next.t - player.pos > 1) player.pos = next.t - 1;
      while (player.i < output.length && output[player.i].t <= player.pos) apply(output[player.i++]);
      if (player.pos >= end) { player.pos = end; player.playing = false; }
      show();
    }, 50);
    show();
  }

  // The audit log, with the chain's verification.
  async function audit() {
    const q = new URLSearchParams();
    for (const [k, v] of new FormData($("audit-filters"))) if (String(v).trim()) q.set(k, String(v).trim());
    let list;
    try { list = await api("GET", "/api/v1/audit?" + q.toString()); } catch (e) {
      $("chain").textContent = e.message; return;
    }
    $("chain").dataset.ok = list.chain_ok ? "true" : "false";
    $("chain").textContent = (list.chain_ok ? "Chain verified. " : "CHAIN BROKEN. ") + (list.chain_message || "");
    const rows = list.events.slice().reverse().map((e) => {
      const d = e.detail && typeof e.detail === "object"
        ? Object.entries(e.detail).filter(([, v]) => v !== null && v !== "")
          .map(([k, v]) => k + "=" + (typeof v === "object" ? JSON.stringify(v) : v)).join(" ")
        : String(e.detail);
      return el("tr", {}, el("td", { class: "num" }, String(e.seq)),
        el("td", { class: "mono" }, e.at.replace("T", " ").slice(0, 19)),
        el("td", { class: "mono" }, e.kind), el("td", {}, e.actor || ""),
        el("td", { class: "mono" }, e.session_id || ""), el("td", { class: "detail-cell" }, d));
    });
    $("audit").tBodies[0].replaceChildren(...rows);
  }
  $("audit-filters").addEventListener("submit", (e) => { e.preventDefault(); audit(); });

  // Approvals: pending requests (approve or deny, with a reason), kept current.
  async function approvals() {
    let list;
    try { list = await api("GET", "/api/v1/approvals"); } catch (e) { return; }
    const rows = list.filter((r) => r.state === "pending" || Date.now() - r.created_ms < 3600e3).map((r) => {
      const yes = r.decisions.filter((d) => d.approved).length;
      const cell = el("td", {});
      if (r.state === "pending" && r.actor !== me.user && may("approval.decide")) {
        cell.append(el("button", { class: "primary", onclick: () => decide(r, true) }, "Approve…"), " ",
          el("button", { class: "danger", onclick: () => decide(r, false) }, "Deny…"));
      }
      return el("tr", { "data-id": r.id }, el("td", { class: "mono" }, r.id), el("td", {}, r.actor),
        el("td", {}, what(r)), el("td", {}, r.policy),
        el("td", {}, yes + "/" + r.required), el("td", {}, r.approvers.join(", ")),
        el("td", {}, el("span", { class: "badge", "data-state": r.state }, r.state)), cell);
    });
    $("approvals").tBodies[0].replaceChildren(...rows);
    $("approvals-empty").hidden = rows.length > 0;
    setTimeout(approvals, 2000);
  }
  // What a request is for: a target and account, or (an access session) resources and the
  // address to let in.
  function what(r) {
    return r.protocol === "network" ? r.target + " from " + r.account : r.target + ":" + r.account;
  }
  async function decide(r, yes) {
    const a = await ask((yes ? "Approve " : "Deny ") + r.id, r.actor + " asks for " + what(r) +
      " under " + r.policy + ".", yes ? "Approve" : "Deny", false);
    if (!a) return;
    try {
      await api("POST", "/api/v1/approvals/" + encodeURIComponent(r.id) + (yes ? "/approve" : "/deny"), { reason: a.reason });
    } catch (e) { alert(e.message); }
  }

  // Access sessions: start one for this browser's address (the gateway sees it), follow the
  // caller's (or, with session.read, everyone's), stop a live one with a reason.
  const accessLive = ["PENDING", "ACTIVE", "PARTIAL", "EXPIRING"];
  async function access(first) {
    let list;
    const all = $("access-all").checked ? "?all=true" : "";
    try { list = await api("GET", "/api/v1/access-sessions" + all); } catch (e) {
      $("access-status").textContent = e.message;
      return;
    }
    if (first) {
      $("access-duration").replaceChildren(...list.durations.map((d) =>
        el("option", { value: d, selected: d === list.default_duration }, d)));
      $("access-all-label").hidden = !may("session.read");
    }
    const rows = list.sessions.map((s) => {
      const rules = el("td", { class: "rules" }, ...s.rules.map((r) => el("span",
        { class: "badge", "data-state": r.state, title: (r.error || r.state) + " · " + r.backend +
          " · held by " + r.holders }, r.resource + " " + r.state)),
        ...s.rules.filter((r) => r.error).map((r) => el("div", { class: "rule-error" },
          r.resource + ": " + r.error)));
      const cell = el("td", {});
      if (accessLive.includes(s.state) && (s.user === me.user || may("session.terminate"))) {
        cell.append(el("button", { class: "danger", onclick: () => stopAccess(s) }, "Stop…"));
      }
      return el("tr", { "data-id": s.id }, el("td", { class: "mono" }, s.id), el("td", {}, s.user),
        el("td", { class: "mono" }, s.address),
        el("td", {}, el("span", { class: "badge", "data-state": s.state }, s.state)), rules,
        el("td", {}, s.duration), el("td", { class: "mono" }, s.ended_at ? "ended " + s.ended_at : s.expires_at),
        cell);
    });
    $("access").tBodies[0].replaceChildren(...rows);
    $("access-empty").hidden = rows.length > 0;
    if (first) setInterval(() => access(false), 2000);
  }
  async function stopAccess(s) {
    const a = await ask("Stop " + s.id, "Remove " + s.user + "'s rules for " + s.address +
      " (a rule another live session holds stays).", "Stop", false, "Reason (audited)");
    if (!a) return;
    try {
      const done = await api("POST", "/api/v1/access-sessions/" + encodeURIComponent(s.id) + "/stop", { reason: a.reason });
      $("access-status").textContent = done.id + " " + done.state + ": " + done.reason;
      $("access-status").dataset.state = done.state;
    } catch (e) { alert(e.message); }
    access(false);
  }
  $("access-start").addEventListener("submit", async (e) => {
    e.preventDefault();
    $("access-go").disabled = true;
    $("access-status").textContent = "Applying…";
    // Before the offered durations are in (or with none), the gateway's default.
    const start = () => api("POST", "/api/v1/access-sessions", { duration: $("access-duration").value || undefined });
    try {
      let s;
      try { s = await start(); } catch (err) {
        // A policy asks for a security key: the ceremony runs here, then the start again.
        const mfa = err.body && err.body.mfa;
        if (!mfa || !mfa.ticket) throw err;
        $("access-status").textContent = "Policy " + mfa.policy + " asks for your security key: touch it…";
        try { await WG.assert(mfa.ticket); } catch (e) {
          throw new Error(e.message + " (or open " + mfa.url + " and start again)");
        }
        s = await start();
      }
      const held = s.rules.filter((r) => r.state === "applied" || r.state === "shared").length;
      $("access-status").textContent = s.state + ": " + held + " of " + s.rules.length +
        " rules in place for " + s.address + " until " + s.expires_at + (s.mfa ? " · key: " + s.mfa : "");
      $("access-status").dataset.state = s.state;
    } catch (err) {
      $("access-status").textContent = err.message;
      $("access-status").dataset.state = "FAILED";
    }
    $("access-go").disabled = false;
    access(false);
  });
  $("access-all").addEventListener("change", () => access(false));

  let typing = null;
  $("filters").addEventListener("input", (e) => {
    clearTimeout(typing);
    typing = setTimeout(connect, 250);
  });
  $("filters").addEventListener("reset", () => setTimeout(connect, 0));
  $("filters").addEventListener("submit", (e) => e.preventDefault());
  for (const t of document.querySelectorAll(".tile")) {
    t.addEventListener("click", () => {
      $("filters").reset();
      const [k, v] = t.dataset.filter.split("=");
      const f = $("filters").elements.namedItem(k);
      if (f && f.type === "checkbox") f.checked = true; else if (f) f.value = v;
      setTimeout(connect, 0);
    });
  }
  $("bulk-terminate").addEventListener("click", bulkTerminate);
  $("signout").addEventListener("click", async () => {
    try { await api("POST", "/api/v1/console/logout"); } catch (_) { /* signed out either way */ }
    location.replace("/console/login");
  });
  start();
})();
