"""A JSON HTTP server on 127.0.0.1 for the tests' stand-ins (TF Serving's REST API, KFP's API)."""

import contextlib
import http.server
import json
import threading
import urllib.parse


@contextlib.contextmanager
def json_server(handle):
    """Serves ``handle(method, path, query, body, headers) -> (status, payload)``; yields the base URL."""
    class Handler(http.server.BaseHTTPRequestHandler):
        def _any(self):
            url = urllib.parse.urlparse(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, payload = handle(self.command, url.path, urllib.parse.parse_qs(url.query), body, headers)
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_DELETE = _any

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
