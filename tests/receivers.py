"""Real receivers on 127.0.0.1 for what trainbench sends: an SMTP server (aiosmtpd) and an HTTP endpoint standing
in for a Slack-compatible webhook.  Tests read what arrived."""

from __future__ import annotations

import contextlib
import email
import email.policy
import http.server
import json
import socket
import threading

from aiosmtpd.controller import Controller


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Mailbox:
    """An SMTP server keeping every message it accepts, parsed."""

    def __init__(self):
        self.messages: list[email.message.EmailMessage] = []
        self.port = free_port()
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
        return "250 OK"


def receiver(status: int, answer: bytes, posts: list) -> http.server.ThreadingHTTPServer:
    """An HTTP server on 127.0.0.1 keeping each POST's JSON body and answering `status` with `answer`."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            posts.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(status)
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


class Webhook:
    """A Slack-compatible webhook receiver: answers "ok" as Slack does."""

    def __init__(self, server: http.server.ThreadingHTTPServer, posts: list):
        self.posts = posts
        self.url = f"http://127.0.0.1:{server.server_address[1]}/services/T0/B0/s3cret-token"


@contextlib.contextmanager
def running_mailbox():
    box = Mailbox()
    box.controller.start()
    try:
        yield box
    finally:
        box.controller.stop()


@contextlib.contextmanager
def running_webhook(status: int = 200, answer: bytes = b"ok"):
    """A webhook receiver answering `status` with `answer` (Slack: 200 "ok"; a refused message: 400 and why)."""
    posts: list[dict] = []
    server = receiver(status, answer, posts)
    try:
        yield Webhook(server, posts)
    finally:
        server.shutdown()
        server.server_close()
