"""A tiny health endpoint for lab nodes.

    python lab/health.py --port P --state FILE [--host H]

GET on any path answers 200 with {"status":"ok"} while FILE contains "ok",
else 500 with {"status":"fail"}. FILE is read on every request.

HTTP/1.1 with a Content-Length, so a client's connection is kept between its checks (as
yaim's http checker keeps it), one thread per connection; one left idle for IDLE_TIMEOUT
seconds is closed, which the checker sees before it sends its next GET.
"""

from __future__ import annotations

import argparse
import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import List, Optional

# Seconds a kept connection may stay idle: longer than any check interval of the lab, and
# an end for the threads of clients gone without closing (a crashed node's link set down).
IDLE_TIMEOUT = 30.0


def is_ok(state: Path) -> bool:
    """Whether the state file says "ok" (a missing file is not ok)."""
    try:
        return state.read_text().strip() == "ok"
    except OSError:
        return False


def make_handler(state: Path) -> type:
    """A request handler class answering from `state`."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = IDLE_TIMEOUT

        def do_GET(self) -> None:
            ok = is_ok(state)
            body = json.dumps({"status": "ok" if ok else "fail"}, separators=(",", ":")).encode()
            self.send_response(200 if ok else 500)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--state", type=Path, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    ThreadingHTTPServer((args.host, args.port), make_handler(args.state)).serve_forever()


if __name__ == "__main__":
    main()
