#!/usr/bin/env python3
"""The measuring side of `scripts/bench console`.

  seed DB N          insert N closed sessions into the gateway's store (as a year of history)
  api URL TOKEN N    p50/p99 (ms) of GET /api/v1/sessions (first page of 100, and the live ones)
  lag URL TOKEN N SSH...   p50/p99 (ms) from starting an SSH client to the console's live stream
                     carrying its session as active: an upper bound of the lag, as it includes the
                     SSH handshake and authentication; SSH... is the ssh command (a command is
                     appended)
"""
import json, sqlite3, subprocess, sys, threading, time, urllib.request


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def seed(db, n):
    c = sqlite3.connect(db, timeout=30)
    now = int(time.time() * 1000)
    rows = []
    for i in range(n):
        start = now - 365 * 86400 * 1000 + i * (365 * 86400 * 1000 // max(n, 1))
        rows.append((f"sess_seed{i:012d}", "closed", "ssh", f"user{i % 300}", "10.0.0.1:40000",
                     "SSH-2.0-OpenSSH_9.2", f"host-{i % 500}.prod", "10.1.0.1:22", "root",
                     f"host-{i % 500}.prod/root", "sre-prod", "bench", start, start + 600000,
                     start + 300000, 1000, 100000, "client_closed"))
    c.executemany(
        "INSERT OR IGNORE INTO sessions (id, state, protocol, actor, client_addr, client_version, "
        "target, target_addr, account, account_ref, policy, gateway, started_ms, ended_ms, "
        "last_input_ms, bytes_in, bytes_out, end_reason) VALUES "
        "(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
    c.commit()


def get(url, token):
    req = urllib.request.Request(url, headers={"Authorization": "Bearer " + token})
    t = time.perf_counter()
    with urllib.request.urlopen(req, timeout=30) as r:
        body = r.read()
    return (time.perf_counter() - t) * 1000, body


def api(url, token, n):
    out = {}
    for name, q in [("page", "/api/v1/sessions?limit=100"), ("live", "/api/v1/sessions?live=true&limit=2000")]:
        get(url + q, token)  # warm
        xs = [get(url + q, token)[0] for _ in range(n)]
        out[name] = (pct(xs, 50), pct(xs, 99))
    print(json.dumps(out))


def lag(url, token, n, ssh):
    seen = {}
    lock = threading.Lock()

    def stream():
        req = urllib.request.Request(url + "/api/v1/console/events?live=true&limit=2000",
                                     headers={"Authorization": "Bearer " + token})
        with urllib.request.urlopen(req, timeout=600) as r:
            for raw in r:
                line = raw.decode("utf-8", "replace").rstrip("\n")
                if not line.startswith("data: "):
                    continue
                now = time.perf_counter()
                try:
                    ev = json.loads(line[6:])
                except ValueError:
                    continue
                with lock:
                    for s in ev.get("list", {}).get("sessions", []):
                        if s["state"] == "active" and s["actor"] and s["id"] not in seen:
                            seen[s["id"]] = now

    threading.Thread(target=stream, daemon=True).start()
    time.sleep(1.5)
    with lock:
        before = set(seen)
    lags = []
    for i in range(n):
        up = time.perf_counter()
        p = subprocess.Popen(ssh + ["sleep 2"], stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        new = None
        for _ in range(500):
            with lock:
                fresh = [k for k in seen if k not in before]
            if fresh:
                new = fresh[0]
                break
            time.sleep(0.002)
        if new is None:
            sys.exit("the live stream never showed the new session")
        with lock:
            at = seen[new]
            before = set(seen)
        lags.append(max(0.0, (at - up) * 1000))
        p.wait()
        time.sleep(0.3)
    print(json.dumps({"lag": (pct(lags, 50), pct(lags, 99), max(lags))}))


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "seed":
        seed(sys.argv[2], int(sys.argv[3]))
    elif cmd == "api":
        api(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    elif cmd == "lag":
        lag(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5:])
    else:
        sys.exit(__doc__)
