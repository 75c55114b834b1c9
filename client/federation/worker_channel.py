"""The local channel between a site's ClientApp processes and its site worker.

A Unix domain socket `worker.sock` in <site state folder>/worker/ (folder 0700, socket 0600), and
beside it `worker.token`, 0600, a random token the worker writes at every start: a ClientApp
process proves with it that it runs as the site's user and talks to the current worker.

One connection per message. Frames are 8-byte big-endian lengths followed by the bytes:
- request: token, Flower's protobuf of the Message, Flower's protobuf of the Context;
- answer: a status ("ok", or why the worker refused), then the reply Message and the Context
  after handling (the SecAgg+ stages keep their keys in Context.state), both as protobuf.
The protobufs are Flower's own (flwr.common.serde), so the reply arrives as the handler built it.

When the worker dies, `sts-client` writes why into `worker.exit` and starts a new one; a message
whose worker died is answered with an error naming the site and that cause.

This module imports only Flower and the standard library: it runs in every ClientApp process.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

from flwr.app import Context, Message
from flwr.common.serde import context_from_proto, context_to_proto, message_from_proto, message_to_proto
from flwr.proto.message_pb2 import Context as ProtoContext  # pylint: disable=E0611
from flwr.proto.message_pb2 import Message as ProtoMessage  # pylint: disable=E0611

SOCKET_NAME = "worker.sock"
TOKEN_NAME = "worker.token"
EXIT_NOTE_NAME = "worker.exit"
STATUS_OK = "ok"
# How long a message waits for a worker that is (re)starting: its imports take 5 s on an idle
# machine and up to a minute on a loaded one.
READY_WAIT_S = 300.0
# How long a ClientApp whose worker vanished waits for sts-client's note of the cause (it polls every 0.5 s).
EXIT_NOTE_WAIT_S = 3.0
_LENGTH = struct.Struct(">Q")
# sockaddr_un holds 108 bytes with the terminating NUL.
_MAX_SOCKET_PATH = 100


class WorkerUnavailable(RuntimeError):
    """The site worker could not be reached, or went away before it replied."""


def worker_dir(state_dir: Path) -> Path:
    """The worker's folder inside the site's state folder."""
    return Path(state_dir) / "worker"


# ------------------------------------------------------------------------------------ framing
def send_frames(sock: socket.socket, *frames: bytes) -> None:
    for frame in frames:
        sock.sendall(_LENGTH.pack(len(frame)) + frame)


def recv_frame(sock: socket.socket) -> bytes:
    """One frame; EOFError when the peer closed the connection before it was complete."""
    (length,) = _LENGTH.unpack(_recv_exact(sock, _LENGTH.size))
    return _recv_exact(sock, length)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    chunks, left = [], n
    while left:
        chunk = sock.recv(min(left, 1 << 20))
        if not chunk:
            raise EOFError(f"connection closed with {left} of {n} bytes missing")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def encode_message(message: Message) -> bytes:
    return message_to_proto(message).SerializeToString()


def decode_message(data: bytes) -> Message:
    return message_from_proto(ProtoMessage.FromString(data))


def encode_context(context: Context) -> bytes:
    return context_to_proto(context).SerializeToString()


def decode_context(data: bytes) -> Context:
    return context_from_proto(ProtoContext.FromString(data))


@contextlib.contextmanager
def unix_address(path: Path) -> Iterator[str]:
    """An address for `path` that fits sockaddr_un: the path itself, or, when it is too long (deep
    site folders), the same file reached through an open descriptor of its folder (/proc/self/fd)."""
    if len(os.fsencode(str(path))) <= _MAX_SOCKET_PATH:
        yield str(path)
        return
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


# ------------------------------------------------------------------------------------ ClientApp side
def forward(message: Message, context: Context, folder: Path, site: str) -> tuple[Message, Context]:
    """Have the site worker listening in `folder` handle `message`; returns its reply and the
    Context after handling. Raises WorkerUnavailable naming `site` and the cause."""
    started = time.time()
    sock = _connect(folder, site)
    with sock:
        try:
            send_frames(sock, _read_token(folder, site), encode_message(message), encode_context(context))
            status = recv_frame(sock).decode("utf-8", "replace")
            if status != STATUS_OK:
                raise WorkerUnavailable(f"site {site}: the site worker refused the message: {status}")
            reply, after = decode_message(recv_frame(sock)), decode_context(recv_frame(sock))
        except (EOFError, ConnectionError) as exc:
            cause = _exit_note(folder, started) or f"the connection closed ({exc})"
            raise WorkerUnavailable(
                f"site {site}: the site worker died while handling {message.metadata.message_type!r}: {cause}"
            ) from None
    return reply, after


def _connect(folder: Path, site: str) -> socket.socket:
    """A connection to the worker, waiting up to READY_WAIT_S while it (re)starts."""
    path = folder / SOCKET_NAME
    deadline = time.monotonic() + READY_WAIT_S
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with unix_address(path) as address:
                sock.connect(address)
            return sock
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            sock.close()
            if time.monotonic() > deadline:
                raise WorkerUnavailable(
                    f"site {site}: no site worker listens at {path} after {READY_WAIT_S:.0f} s "
                    f"({exc.strerror}): is sts-client running? see its log"
                ) from None
            time.sleep(0.1)


def _read_token(folder: Path, site: str) -> bytes:
    try:
        return (folder / TOKEN_NAME).read_bytes()
    except OSError as exc:
        raise WorkerUnavailable(f"site {site}: cannot read the site worker's token {folder / TOKEN_NAME}: {exc}") from None


def _exit_note(folder: Path, since: float) -> str | None:
    """sts-client's note of why the worker exited, if written after `since` (waits a little for it)."""
    note = folder / EXIT_NOTE_NAME
    deadline = time.monotonic() + EXIT_NOTE_WAIT_S
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if note.stat().st_mtime >= since - 1.0:
                return note.read_text(encoding="utf-8").strip()
        time.sleep(0.1)
    return None
