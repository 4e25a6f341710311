// Wardengate console: the security-key step shared by the console's pages. The gateway's
// ceremony endpoints speak webauthn-rs's JSON (base64url); the browser's API wants buffers.
"use strict";
(function () {
  const b64 = (buf) => btoa(String.fromCharCode(...new Uint8Array(buf)))
    .replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  const unb64 = (s) => {
    const t = atob(s.replace(/-/g, "+").replace(/_/g, "/"));
    return Uint8Array.from(t, (c) => c.charCodeAt(0)).buffer;
  };
  const post = async (path, body, headers) => {
    const r = await fetch(path, { method: "POST", credentials: "same-origin",
      headers: Object.assign({ "content-type": "application/json" }, headers || {}),
      body: JSON.stringify(body) });
    const v = await r.json().catch(() => ({ error: "the gateway answered " + r.status }));
    if (!r.ok) throw new Error(v.error || ("the gateway answered " + r.status));
    return v;
  };
  function request(o) {
    const p = structuredClone(o.publicKey);
    p.challenge = unb64(p.challenge);
    (p.allowCredentials || []).forEach((c) => { c.id = unb64(c.id); });
    return { publicKey: p };
  }
  function answer(c) {
    const r = c.response;
    return { id: c.id, rawId: b64(c.rawId), type: c.type,
      extensions: c.getClientExtensionResults(),
      response: { authenticatorData: b64(r.authenticatorData),
        clientDataJSON: b64(r.clientDataJSON), signature: b64(r.signature),
        userHandle: r.userHandle ? b64(r.userHandle) : null } };
  }
  // Prove presence with the ticket the gateway gave: start, touch, finish.
  async function assert(ticket) {
    const started = await post("/api/v1/mfa/ceremony/start", { ticket });
    let cred;
    try {
      cred = await navigator.credentials.get(request(started.options));
    } catch (e) {
      throw new Error("the browser did not get an answer from the key (" + e.name + ")");
    }
    return post("/api/v1/mfa/ceremony/finish", { ticket, credential: answer(cred) });
  }
  window.WG = Object.assign(window.WG || {}, { post, assert });
})();
