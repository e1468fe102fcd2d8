"""MQTT brokers fedgate can start by itself.

``EmbeddedBroker`` runs the pure-Python amqtt broker on its own event loop in a daemon thread, so
``fedgate sim`` works right after ``pip install`` with nothing else installed. It keeps state in
memory only: a restart loses retained messages and queued sessions. Production deployments use
Mosquitto (or any MQTT 3.1.1 broker) with persistence; ``MosquittoBroker`` starts the real
binary on a free loopback port, with persistence, and can stop, restart and kill it (tests,
benchmarks, ``--broker mosquitto``).
"""

from __future__ import annotations

import asyncio
import getpass
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from native.errors import ConfigError, TransportError

log = logging.getLogger(__name__)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on ``host`` a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float) -> bool:
    """True once something accepts TCP connections on host:port, False after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def _fixed_broker_class() -> type[Any]:
    from amqtt.broker import Broker  # type: ignore[import-untyped]

    class _Broker(Broker):  # type: ignore[misc]
        # amqtt 0.11/0.12 replays, on every CONNECT, the retained messages matching any
        # *other* session's subscriptions, at QoS 0, to the connecting client. Deliver retained
        # messages only for filters this session holds, at the QoS it subscribed with.
        async def _publish_retained_messages_for_subscription(
            self, subscription: tuple[str, int], session: Any
        ) -> None:
            topic_filter, qos = subscription
            held = [q for s, q in self._subscriptions.get(topic_filter, []) if s is session]
            if not held:
                return
            await super()._publish_retained_messages_for_subscription(
                (topic_filter, max(qos, held[0])), session
            )

    return _Broker


class EmbeddedBroker:
    """The amqtt broker in a background thread, listening on ``host:port`` (port 0 = free port)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port or free_port(host)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._broker: Any = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> str:
        """Start serving; return the broker URL."""
        try:
            broker_cls = _fixed_broker_class()
        except ImportError as exc:
            raise ConfigError(f"the embedded broker needs the amqtt package: {exc}") from None
        ready = threading.Event()
        failure: list[BaseException] = []
        loop = asyncio.new_event_loop()
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True},
            },
        }

        async def boot() -> None:
            self._broker = broker_cls(config)
            await self._broker.start()

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(boot())
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()

        self._loop = loop
        self._thread = threading.Thread(target=run, name="fedgate-broker", daemon=True)
        self._thread.start()
        if not ready.wait(timeout) or failure:
            self._thread.join(1.0)
            raise TransportError(f"embedded broker did not start on {self.url}: {failure}")
        log.info("embedded MQTT broker listening on %s", self.url)
        return self.url

    def stop(self, timeout: float = 10.0) -> None:
        """Shut the broker down and join its thread."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if self._broker is not None:
            future = asyncio.run_coroutine_threadsafe(self._broker.shutdown(), loop)
            try:
                future.result(timeout)
            except Exception:
                log.exception("embedded broker shutdown failed")
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)
        loop.close()
        self._loop = self._thread = self._broker = None

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def find_mosquitto() -> str | None:
    """Path of a mosquitto binary ($FEDGATE_MOSQUITTO, PATH, /usr/sbin), or None."""
    candidates = [os.environ.get("FEDGATE_MOSQUITTO"), shutil.which("mosquitto"),
                  "/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"]
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


class MosquittoBroker:
    """A real Mosquitto on a loopback port with on-disk persistence, for tests and simulations."""

    def __init__(self, workdir: str | Path | None = None, port: int = 0,
                 executable: str | None = None, *, password_file: str | Path | None = None,
                 tls_files: tuple[str | Path, str | Path, str | Path] | None = None) -> None:
        """``password_file`` (mosquitto_passwd format) turns anonymous access off;
        ``tls_files`` = (CA, server certificate, server key) makes the listener TLS-only."""
        exe = executable or find_mosquitto()
        if exe is None or not os.access(exe, os.X_OK):
            raise ConfigError(f"mosquitto not found at {exe} (install it or set FEDGATE_MOSQUITTO)")
        self.executable = exe
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self._tmp = None if workdir else tempfile.TemporaryDirectory(prefix="fedgate-mosq-")
        self.workdir = Path(workdir) if workdir else Path(self._tmp.name)  # type: ignore[union-attr]
        self._proc: subprocess.Popen[bytes] | None = None
        self.password_file = password_file
        self.tls_files = tls_files

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _write_config(self) -> Path:
        conf = self.workdir / "mosquitto.conf"
        security = "allow_anonymous true\n"
        if self.password_file is not None:
            security = f"allow_anonymous false\npassword_file {self.password_file}\n"
        if self.tls_files is not None:
            ca, cert, key = self.tls_files
            security += f"cafile {ca}\ncertfile {cert}\nkeyfile {key}\n"
        # Started as root, mosquitto switches to the "mosquitto" user, which cannot read our
        # private work folder; run it as whoever started it instead.
        conf.write_text(
            f"listener {self.port} {self.host}\n"
            f"user {getpass.getuser()}\n"
            + security +
            "persistence true\n"
            f"persistence_location {self.workdir}/\n"
            "autosave_interval 0\n"
            "max_queued_messages 100000\n"
            # Without it every small message waits for the client's delayed ACK (~40 ms a hop).
            "set_tcp_nodelay true\n"
            f"log_dest file {self.workdir}/mosquitto.log\n"
        )
        return conf

    def start(self, timeout: float = 10.0) -> str:
        """Start (or start again on the same port, keeping its persistence); return the URL."""
        if self.running:
            return self.url
        conf = self._write_config()
        self._proc = subprocess.Popen(
            [self.executable, "-c", str(conf)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        if not wait_for_port(self.host, self.port, timeout):
            self.kill()
            logfile = self.workdir / "mosquitto.log"
            log_text = logfile.read_text(errors="replace")[-500:] if logfile.exists() else ""
            raise TransportError(f"mosquitto did not listen on {self.url}: {log_text}")
        return self.url

    def stop(self, timeout: float = 10.0) -> None:
        """Stop gracefully (SIGTERM): Mosquitto writes its persistence file before exiting."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    def kill(self) -> None:
        """Kill abruptly (SIGKILL): whatever was not yet saved is lost, as in a power cut."""
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.kill()
            self._proc.wait()
        self._proc = None

    def restart(self, timeout: float = 10.0) -> str:
        """Graceful stop, then start on the same port with the same persistence."""
        self.stop(timeout)
        return self.start(timeout)

    def close(self) -> None:
        """Stop and remove the temporary working folder."""
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> MosquittoBroker:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
