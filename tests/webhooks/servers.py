"""Real receivers for webhook tests: a recording HTTP(S) server on any loopback address, a
receiver that trickles its answer, and a throw-away certificate authority."""

import datetime as dt
import json
import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self):
        return json.loads(self.body)


@dataclass
class Receiver:
    """Answers each POST with the next scripted status (the last one repeats)."""

    url: str
    host: str = "127.0.0.1"
    port: int = 0
    statuses: list[int] = field(default_factory=lambda: [200])
    delay_s: float = 0.0
    requests: list[Received] = field(default_factory=list)
    server_names: list[str | None] = field(default_factory=list)  # TLS SNI of each handshake
    got_request: threading.Condition = field(default_factory=threading.Condition)

    def wait_for(self, count: int, timeout: float = 20.0) -> list[Received]:
        with self.got_request:
            self.got_request.wait_for(lambda: len(self.requests) >= count, timeout=timeout)
        return list(self.requests)


@contextmanager
def http_receiver(host: str = "127.0.0.1", port: int = 0, tls: ssl.SSLContext | None = None) -> Iterator[Receiver]:
    state: dict[str, Receiver] = {}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            recv = state["receiver"]
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if recv.delay_s:
                threading.Event().wait(recv.delay_s)
            with recv.got_request:
                recv.requests.append(Received(self.path, dict(self.headers.items()), body))
                index = min(len(recv.requests), len(recv.statuses)) - 1
                code = recv.statuses[index]
                recv.got_request.notify_all()
            payload = json.dumps({"ok": code < 400, "at": f"{host}"}).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(payload)
            self.close_connection = True

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - base signature
            return

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    bound_port = server.server_address[1]
    scheme = "http"
    if tls is not None:
        scheme = "https"

        def remember(_sock: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
            state["receiver"].server_names.append(name)

        tls.sni_callback = remember
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    state["receiver"] = Receiver(url=f"{scheme}://{host}:{bound_port}/hook", host=host, port=bound_port)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state["receiver"]
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class Trickler:
    url: str
    connections: int = 0
    sent: int = 0


@contextmanager
def trickling_receiver(mode: str, interval_s: float = 0.05, host: str = "127.0.0.1") -> Iterator[Trickler]:
    """A receiver that reads the request, then sends its answer a few bytes at a time for ever:
    ``headers`` (a status line, then one header byte per interval), ``body`` (complete headers
    announcing a big body, then one body byte per interval), ``continue`` (an endless series of
    ``100 Continue`` interim answers), ``big`` (a 5 MB body at once). Each byte arrives well
    within any idle timeout."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, 0))
    listener.listen(8)
    listener.settimeout(0.2)
    stop = threading.Event()
    state = Trickler(url=f"http://{host}:{listener.getsockname()[1]}/hook")
    chunks = {
        "headers": (b"HTTP/1.1 200 OK\r\n", b"X"),
        "body": (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 1000000\r\n\r\n", b"y"),
        "continue": (b"", b"HTTP/1.1 100 Continue\r\n\r\n"),
        "big": (b"HTTP/1.1 200 OK\r\nContent-Length: 5000000\r\n\r\n" + b"z" * 5_000_000, b""),
    }
    first, repeated = chunks[mode]

    def serve(conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            data = b""
            while b"\r\n\r\n" not in data:
                more = conn.recv(65536)
                if not more:
                    return
                data += more
            try:
                if first:
                    conn.sendall(first)
                while repeated and not stop.wait(interval_s):
                    conn.sendall(repeated)
                    state.sent += len(repeated)
                stop.wait()
            except OSError:  # the sender gave up and closed: what we wait for
                return

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            state.connections += 1
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        stop.set()
        thread.join(2)
        listener.close()


@dataclass(frozen=True)
class ThrowawayCA:
    """A throw-away certificate authority: ``server_context(names)`` serves a certificate for
    ``names`` signed by it; ``client_context()`` trusts it (and nothing else)."""

    directory: Path
    cert_pem: bytes
    key_pem: bytes

    @classmethod
    def create(cls, directory: Path) -> "ThrowawayCA":
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Livestream test CA")])
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        key_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        return cls(directory, cert.public_bytes(serialization.Encoding.PEM), key_pem)

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cadata=self.cert_pem.decode())

    def server_context(self, names: list[str]) -> ssl.SSLContext:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        ca_key = serialization.load_pem_private_key(self.key_pem, password=None)
        ca_cert = x509.load_pem_x509_certificate(self.cert_pem)
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()),  # type: ignore[arg-type]
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
        )
        stem = self.directory / f"leaf-{names[0]}"
        cert_path, key_path = stem.with_suffix(".crt"), stem.with_suffix(".key")
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        pkcs8 = serialization.PrivateFormat.PKCS8
        key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, pkcs8, serialization.NoEncryption()))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_path, key_path)
        return context
