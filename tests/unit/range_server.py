"""A local HTTP server of in-memory files that answers Range requests as GitHub's does (206 from an offset, 416 past
the end) and records every request: what ``datagen.py download`` resumes against, on 127.0.0.1 only."""

import contextlib
import http.server
import re
import threading


class RangeServer(http.server.ThreadingHTTPServer):
    """Serves in-memory files with HTTP Range support and records every request."""

    def __init__(self, files):
        self.files, self.requests = files, []
        super().__init__(("127.0.0.1", 0), RangeHandler)


class RangeHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        name = self.path.rsplit("/", 1)[-1]
        wanted = self.headers.get("Range")
        self.server.requests.append((name, wanted))
        data = self.server.files.get(name)
        if data is None:
            self.send_error(404)
            return
        start = int(re.fullmatch(r"bytes=(\d+)-", wanted).group(1)) if wanted else 0
        if start >= len(data):
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(data)}")
            self.end_headers()
            return
        self.send_response(206 if wanted else 200)
        if wanted:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        self.wfile.write(data[start:])

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def serving(files: dict):
    """A ``RangeServer`` of ``files`` ({name: bytes}) in a thread; yields it and its base URL."""
    server = RangeServer(files)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server, f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
