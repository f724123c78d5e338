"""Real receivers on 127.0.0.1 for what trainbench sends: an SMTP server (aiosmtpd) and an HTTP endpoint standing
in for a Slack-compatible webhook.  Tests read what arrived."""

from __future__ import annotations

import contextlib
import datetime as dt
import email
import email.policy
import http.server
import ipaddress
import json
import socket
import ssl
import threading
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Mailbox:
    """An SMTP server keeping every message it accepts, parsed."""

    def __init__(self, **smtp_parameters):
        self.messages: list[email.message.EmailMessage] = []
        self.port = free_port()
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port, **smtp_parameters)

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
        return "250 OK"


class TlsMailbox(Mailbox):
    """An SMTP server that logs in only after STARTTLS, with a self-signed certificate for 127.0.0.1 written to
    `cert` (trusted by a client only when pointed at it); `logins` holds (login, password, over TLS) each."""

    def __init__(self, folder: Path):
        self.logins: list[tuple[str, str, bool]] = []
        self.cert, key = self_signed(folder)
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(self.cert, key)
        super().__init__(tls_context=tls, require_starttls=True, auth_require_tls=True, authenticator=self.authenticate)

    def authenticate(self, server, session, envelope, mechanism, auth_data) -> AuthResult:
        self.logins.append((auth_data.login.decode(), auth_data.password.decode(), session.ssl is not None))
        return AuthResult(success=True)


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate and key for 127.0.0.1, valid for a day."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    paths = folder / "smtp.crt", folder / "smtp.key"
    paths[0].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return paths


def receiver(status: int, answer: bytes, posts: list, requests: list) -> http.server.ThreadingHTTPServer:
    """An HTTP server on 127.0.0.1 keeping each POST's JSON body (and its path and Authorization header in
    `requests`) and answering `status` with `answer`."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            posts.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            requests.append({"path": self.path, "authorization": self.headers.get("Authorization")})
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

    def __init__(self, server: http.server.ThreadingHTTPServer, posts: list, requests: list):
        self.posts = posts
        self.requests = requests
        self.port = server.server_address[1]
        self.url = f"http://127.0.0.1:{server.server_address[1]}/services/T0/B0/s3cret-token"


@contextlib.contextmanager
def running_mailbox(tls_folder: Path | None = None):
    """A Mailbox, or with `tls_folder` a TlsMailbox keeping its certificate there."""
    box = Mailbox() if tls_folder is None else TlsMailbox(tls_folder)
    box.controller.start()
    try:
        yield box
    finally:
        box.controller.stop()


@contextlib.contextmanager
def running_webhook(status: int = 200, answer: bytes = b"ok"):
    """A webhook receiver answering `status` with `answer` (Slack: 200 "ok"; a refused message: 400 and why)."""
    posts: list[dict] = []
    requests: list[dict] = []
    server = receiver(status, answer, posts, requests)
    try:
        yield Webhook(server, posts, requests)
    finally:
        server.shutdown()
        server.server_close()
