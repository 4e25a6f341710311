// Wardengate: the security-key ceremony, shared by every page that asks for a key (the console's
// sign-in, the /mfa page for enrolment, step-up and `wgctl login`). The gateway's ceremony
// endpoints speak webauthn-rs's JSON (base64url); the browser's API wants buffers.
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
  function creation(o) {
    const p = structuredClone(o.publicKey);
    p.challenge = unb64(p.challenge);
    p.user.id = unb64(p.user.id);
    (p.excludeCredentials || []).forEach((c) => { c.id = unb64(c.id); });
    // webauthn-rs asks for credProtect (not enforced) on a non-discoverable credential, which
    // Chromium refuses as "inconsistent" (NotSupportedError); the gateway does not rely on it.
    if (p.extensions && (p.authenticatorSelection || {}).residentKey !== "required") {
      delete p.extensions.credentialProtectionPolicy;
      delete p.extensions.enforceCredentialProtectionPolicy;
    }
    return { publicKey: p };
  }
  function request(o) {
    const p = structuredClone(o.publicKey);
    p.challenge = unb64(p.challenge);
    (p.allowCredentials || []).forEach((c) => { c.id = unb64(c.id); });
    return { publicKey: p };
  }
  function answer(c) {
    const r = c.response, out = { id: c.id, rawId: b64(c.rawId), type: c.type,
      extensions: c.getClientExtensionResults() };
    if (r.attestationObject) {
      out.response = { attestationObject: b64(r.attestationObject),
        clientDataJSON: b64(r.clientDataJSON) };
    } else {
      out.response = { authenticatorData: b64(r.authenticatorData),
        clientDataJSON: b64(r.clientDataJSON), signature: b64(r.signature),
        userHandle: r.userHandle ? b64(r.userHandle) : null };
    }
    return out;
  }
  // One ceremony with the ticket the gateway gave: what it is for (start), the key's answer
  // (touch: a new credential to enrol, else an assertion), the gateway's verdict (finish).
  const start = (ticket) => post("/api/v1/mfa/ceremony/start", { ticket });
  async function touch(started) {
    try {
      return started.kind === "enroll"
        ? await navigator.credentials.create(creation(started.options))
        : await navigator.credentials.get(request(started.options));
    } catch (e) {
      throw new Error("the browser did not get an answer from the key (" + e.name + ": " + e.message + ")");
    }
  }
  const finish = (ticket, cred) =>
    post("/api/v1/mfa/ceremony/finish", { ticket, credential: answer(cred) });
  async function assert(ticket) {
    const started = await start(ticket);
    return finish(ticket, await touch(started));
  }
  window.WG = Object.assign(window.WG || {}, { post, start, touch, finish, assert });
})();
