// Wardengate: the desktop page (an RDP session live, /shadow/ID, or its recording, /replay/ID).
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const canvas = $("desktop"), ctx = canvas.getContext("2d");
  const id = decodeURIComponent(location.pathname.split("/").pop() || "");
  // The same page shows a live session (/shadow/ID) and plays a desktop recording (/replay/ID).
  const replay = location.pathname.startsWith("/replay/");
  const again = replay ? "`wgctl recording play " + id + " --browser`"
    : "`wgctl session shadow " + id + " --browser`";
  if (replay) $("mode").textContent = "replay";
  const ticket = new URLSearchParams(location.hash.slice(1)).get("ticket");
  // The ticket is spent by the connection below; keep it out of the address bar and history.
  history.replaceState(null, "", location.pathname);
  // What the page shows, for people and for tests.
  const wg = window.wgShadow = { frames: 0, whole: 0, state: "connecting", attached: null,
    notices: [], end: null, size: null, position: null, duration: null };
  const state = (text, ended) => { wg.state = text; $("state").textContent = text;
    $("state").className = ended ? "ended" : ""; };
  const notice = (text) => { wg.notices.push(text);
    $("notices").textContent += text + "\n"; };
  if (!ticket) {
    state("this link has no ticket: ask for a new one with " + again, true);
    return;
  }
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  const path = replay ? "/api/v1/recordings/" + encodeURIComponent(id) + "/replay/ws"
    : "/api/v1/sessions/" + encodeURIComponent(id) + "/shadow/ws";
  const ws = new WebSocket(proto + "//" + location.host + path + "?ticket=" +
    encodeURIComponent(ticket));
  ws.binaryType = "arraybuffer";
  let drawing = Promise.resolve();
  let fps = [];

  async function draw(buf) {
    const dv = new DataView(buf);
    if (buf.byteLength < 16 || String.fromCharCode(dv.getUint8(0), dv.getUint8(1),
        dv.getUint8(2), dv.getUint8(3)) !== "WGD1") {
      notice("[shadow] a picture this page cannot read was skipped");
      return;
    }
    const whole = (dv.getUint8(4) & 1) === 1;
    const w = dv.getUint16(6, true), h = dv.getUint16(8, true);
    const sw = dv.getUint16(10, true), sh = dv.getUint16(12, true), n = dv.getUint16(14, true);
    if (canvas.width !== w || canvas.height !== h) { canvas.width = w; canvas.height = h; }
    wg.size = [sw, sh];
    $("size").textContent = sw + "×" + sh + (sw !== w ? " shown at " + w + "×" + h : "");
    const rects = [];
    let off = 16;
    for (let i = 0; i < n; i++) {
      const x = dv.getUint16(off, true), y = dv.getUint16(off + 2, true);
      const len = dv.getUint32(off + 8, true);
      const png = new Blob([new Uint8Array(buf, off + 12, len)], { type: "image/png" });
      rects.push([x, y, createImageBitmap(png)]);
      off += 12 + len;
    }
    // Decode every rectangle first, then draw them together: no half-updated frames.
    const bitmaps = await Promise.all(rects.map((r) => r[2]));
    bitmaps.forEach((bm, i) => { ctx.drawImage(bm, rects[i][0], rects[i][1]); bm.close(); });
    wg.frames++;
    if (whole) wg.whole++;
    const now = performance.now();
    fps = fps.filter((t) => now - t < 5000).concat(now);
    state((replay ? "playing" : "live") + " · " + (fps.length / 5).toFixed(1) + " updates/s");
  }

  ws.onmessage = (ev) => {
    if (typeof ev.data !== "string") {
      drawing = drawing.then(() => draw(ev.data)).catch((e) => notice("[shadow] " + e));
      return;
    }
    let m;
    try { m = JSON.parse(ev.data); } catch (e) { return; }
    if (m.type === "attached") {
      wg.attached = m;
      $("who").textContent = m.session + " · " + m.actor + " on " + m.target + " (" +
        m.protocol + ") · attached at " + m.at + " as " + m.observer + " · banner=" + m.banner;
      document.title = "Shadow " + m.actor + " on " + m.target + " · Wardengate";
      state("waiting for the desktop");
    } else if (m.type === "replay") {
      wg.attached = m;
      wg.duration = m.duration;
      $("who").textContent = "replay of " + m.recording + " · " + m.actor + " on " + m.target +
        " (" + m.protocol + ") · recorded " + m.started_at + " · " + m.speed;
      document.title = "Replay " + m.actor + " on " + m.target + " · Wardengate";
      state("starting");
    } else if (m.type === "position") {
      wg.position = m.at;
      $("pos").textContent = m.at + " / " + wg.duration;
    } else if (m.type === "notice" || m.type === "line") {
      notice(m.text);
    } else if (m.type === "end") {
      wg.end = m.reason;
      drawing.then(() => state("session ended: " + m.reason, true));
    }
  };
  ws.onclose = () => {
    if (wg.end !== null) return;
    if (!wg.attached) {
      state((replay ? "could not play: the link was used already or has expired (links work " +
        "once, for 60 s), or the recording cannot be read. "
        : "could not attach: the link was used already or has expired (links work once, " +
        "for 60 s), the session is over, or its policy blocks shadowing. ") +
        "Ask for a new one with " + again, true);
    } else {
      state("disconnected from the gateway", true);
    }
    wg.end = wg.end || "disconnected";
  };
})();
