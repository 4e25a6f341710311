// Wardengate: the /mfa page — enrol a security key, prove presence for a session (step-up), or
// the key step of `wgctl login`, with the one-time ticket from the link (webauthn.js does the
// ceremony).
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  // The ticket travels in the fragment, which the browser never sends; it leaves the address
  // bar at once so that it is neither bookmarked nor shared by accident.
  const ticket = new URLSearchParams(location.hash.slice(1)).get("ticket") || "";
  history.replaceState(null, "", location.pathname);

  const say = (state, text) => {
    const s = $("status");
    s.dataset.state = state;
    s.textContent = text;
    $("again").hidden = state !== "retry";
  };

  async function run() {
    if (!ticket) { say("failed", "This page needs the link the gateway gave you (wgctl mfa enroll, wgctl mfa prove, or your ssh prompt)."); return; }
    let started;
    try {
      started = await WG.start(ticket);
    } catch (e) { say("failed", e.message); return; }
    const enroll = started.kind === "enroll";
    $("title").textContent = enroll ? "Enrol a security key"
      : started.kind === "signin" ? "Sign in to wgctl" : "Touch your security key";
    const what = $("what");
    what.replaceChildren();
    const b = (t) => { const e = document.createElement("b"); e.textContent = t; return e; };
    if (enroll) {
      what.append("For ", b(started.user), ": registering ", b(started.name),
        ". Insert the key (or use this device's passkey) when the browser asks.");
    } else if (started.kind === "signin") {
      what.append("Signing in as ", b(started.user), ". Touch the key when it blinks.");
    } else {
      what.append("For ", b(started.user),
        started.policy ? " under policy " : ", for the next session", started.policy ? b(started.policy) : "",
        ". Touch the key when it blinks.");
    }
    say("working", enroll ? "Waiting for the key…" : "Waiting for a touch…");
    let cred;
    try {
      cred = await WG.touch(started);
    } catch (e) {
      say("retry", e.message.charAt(0).toUpperCase() + e.message.slice(1) + ". Try again.");
      return;
    }
    try {
      const done = await WG.finish(ticket, cred);
      say("done", done.message);
    } catch (e) { say("failed", e.message); }
  }
  $("again").addEventListener("click", run);
  run();
})();
