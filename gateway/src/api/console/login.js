// Wardengate console sign-in: password, then the security key where the gateway asks for it,
// then the grant is exchanged for the session cookie.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const say = (state, text) => { const s = $("status"); s.dataset.state = state; s.textContent = text; };
  $("form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    $("submit").disabled = true;
    say("working", "Checking…");
    try {
      const started = await WG.post("/api/v1/console/login",
        { user: $("user").value, password: $("password").value });
      if (started.ticket) {
        if (location.origin !== started.origin) {
          throw new Error("Security keys answer only at " + started.origin +
            " (the gateway's [identity] origin): open the console there.");
        }
        say("working", "Touch your security key…");
        await WG.assert(started.ticket);
      }
      await WG.post("/api/v1/console/session", { grant: started.grant });
      say("done", "Signed in.");
      location.replace("/console");
    } catch (e) {
      say("failed", e.message);
      $("password").value = "";
      $("submit").disabled = false;
    }
  });
  // Until now the button is disabled (nothing is sent, and never in the address, before the
  // handler exists); the page says when it is ready.
  $("submit").disabled = false;
  $("form").dataset.ready = "1";
})();
