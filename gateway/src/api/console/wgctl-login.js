// Wardengate: the password step of `wgctl login` (/login); the security key follows on /mfa.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const code = new URLSearchParams(location.hash.slice(1)).get("code") || "";
  history.replaceState(null, "", location.pathname);
  $("code").value = code;
  if (code) { $("user").focus(); }
  $("form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const s = $("status");
    s.dataset.state = "working";
    s.textContent = "Checking…";
    try {
      const r = await fetch("/api/v1/login/password", { method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ code: $("code").value, user: $("user").value,
                               password: $("password").value }) });
      const v = await r.json().catch(() => ({ error: "the gateway answered " + r.status }));
      if (!r.ok) throw new Error(v.error || ("the gateway answered " + r.status));
      // The security-key step is the gateway's key page, with a one-time ticket.
      location.assign("/mfa#ticket=" + encodeURIComponent(v.ticket));
    } catch (e) {
      s.dataset.state = "failed";
      s.textContent = e.message;
      $("password").value = "";
    }
  });
  // Until now the button is disabled (nothing is sent, and never in the address, before the
  // handler exists); the page says when it is ready.
  $("submit").disabled = false;
  $("form").dataset.ready = "1";
})();
