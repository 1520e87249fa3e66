"""The compose example's "legacy app": it knows nothing about auth and calls its authproxy
sidecar at http://localhost:8080 (they share one network namespace).

- Every INTERVAL seconds it calls GET /api/ping through the proxy and logs the outcome.
- It also serves HTTP on 0.0.0.0:8000 (published on the host): GET /<path> is relayed to
  http://localhost:8080/api/<path> and answered as JSON {"status": ..., "upstream": ...}, so
  `curl http://127.0.0.1:18080/hello` shows what the fake API Gateway received (with the
  injected x-api-key) without the proxy itself being reachable from outside.
"""

import json
import os
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PROXY = os.environ.get("PROXY_URL", "http://localhost:8080/api")
INTERVAL = float(os.environ.get("INTERVAL", "15"))
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # ignore HTTP_PROXY


def call(path: str) -> tuple[int, object]:
    try:
        with opener.open(PROXY + path, timeout=10) as resp:
            status, body = resp.status, resp.read()
    except urllib.error.HTTPError as e:
        status, body = e.code, e.read()
    except OSError as e:
        return 0, f"proxy not reachable: {e}"
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body.decode("utf-8", "replace")


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        status, upstream = call(self.path)
        data = json.dumps({"status": status, "upstream": upstream}, indent=2).encode()
        self.send_response(200 if status else 502)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, fmt: str, *args: object) -> None:
        print("app: " + fmt % args, flush=True)


def loop() -> None:
    while True:
        status, upstream = call("/ping")
        headers = dict(upstream.get("headers", [])) if isinstance(upstream, dict) else {}
        print(f"app: GET /api/ping -> {status}; x-api-key arrived upstream: "
              f"{'x-api-key' in {k.lower() for k in headers}}", flush=True)
        time.sleep(INTERVAL)


def main() -> None:
    server = ThreadingHTTPServer(("0.0.0.0", 8000), Handler)
    # PID 1 in a container ignores SIGTERM unless it handles it: stop promptly on `compose down`
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    threading.Thread(target=loop, daemon=True).start()
    print(f"app: serving on :8000, calling {PROXY}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
