"""The site worker: one long-lived process per site, started by `sts-client` beside its SuperNode.

    python -m stsfl.client.federation.site_worker --site site.yaml --dir FOLDER [--parent PID]

It imports torch and the site's task code once, then serves the messages that the per-message
ClientApp processes forward over the Unix socket in FOLDER (stsfl.client.federation.worker_channel: socket
and token 0600 in a 0700 folder), one at a time, with the handlers of stsfl.client.federation.site_app. The
prepared site data stays in memory for the run (stsfl.client.federation.site_task.keep_site_data); it is
dropped when a message of another run arrives, after the run's last phase (site outputs), and
after `--idle-clear-s` without messages. A handler that raises is answered with the error reply a
ClientApp process would have sent. The worker exits when its parent (`sts-client`) is gone.

What it prints (to sts-client's screen and log) is the site operator's view of the runs: the run
that started, each round's local training (epochs, loss, seconds), the end of the run and where
the site's outputs are.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import hmac
import os
import secrets
import socket
import sys
import time
import traceback
from pathlib import Path

from flwr.app import Context, Error, Message
from flwr.common.constant import ErrorCode

from stsfl.client.federation.worker_channel import (
    SOCKET_NAME,
    STATUS_OK,
    TOKEN_NAME,
    decode_context,
    decode_message,
    encode_context,
    encode_message,
    recv_frame,
    send_frames,
    unix_address,
)
from stsfl.common.atomic_file import write_bytes_atomic
from stsfl.common.config import SiteConfig, load_config
from stsfl.common.fed_protocol import CONFIG, METRICS, MSG_SITE_OUTPUTS, MSG_TRAIN
from stsfl.common.messages import RoundConfig, RunConfig, record_key

ACCEPT_POLL_S = 1.0  # how often the idle worker checks its parent and the idle clearing
REQUEST_READ_TIMEOUT_S = 120.0  # a ClientApp that connected sends its message at once


def _say(text: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} site worker: {text}", flush=True)


def handle_error_reply(message: Message, exc: Exception) -> Message:
    """The reply Flower's ClientApp runner makes of a handler that raised (same code and reason)."""
    reason = str(type(exc)) + ":<'" + str(exc) + "'>"
    return Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=reason), reply_to=message)


class SiteWorker:
    """Serves one site's messages on the socket in `folder` with `handle(message, context)`."""

    def __init__(
        self,
        site: SiteConfig,
        site_yaml: Path,
        folder: Path,
        handle,
        clear,
        parent: int | None = None,
        idle_clear_s: float = 3600.0,
    ):
        self.site, self.site_yaml, self.folder = site, site_yaml, folder
        self.handle, self.clear = handle, clear
        self.parent, self.idle_clear_s = parent, idle_clear_s
        self.run_id: int | None = None  # the run whose state the worker holds
        self.last_message = time.monotonic()
        self.token = secrets.token_hex(32).encode()

    def listen(self) -> socket.socket:
        """Create the 0700 folder, a fresh 0600 token and the 0600 socket; returns the listening socket."""
        self.folder.mkdir(parents=True, exist_ok=True)
        os.chmod(self.folder, 0o700)
        path = self.folder / SOCKET_NAME
        if _listening(path):
            raise SystemExit(
                f"site {self.site.name}: another site worker listens at {path}: two sites share this "
                "state folder (give each site YAML its own cache_dir)"
            )
        write_bytes_atomic(self.folder / TOKEN_NAME, self.token, mode=0o600)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # a previous worker's socket
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)  # the socket file is created 0600: no moment where others could connect
        try:
            with unix_address(path) as address:
                server.bind(address)
        finally:
            os.umask(old_umask)
        os.chmod(path, 0o600)
        server.listen(16)
        server.settimeout(ACCEPT_POLL_S)
        return server

    def serve_forever(self) -> None:
        server = self.listen()
        _say(f"site {self.site.name} ready (pid {os.getpid()})")
        with server:
            while self._parent_alive():
                try:
                    conn, _ = server.accept()
                except TimeoutError:
                    self._clear_when_idle()
                    continue
                with conn:
                    self.serve_connection(conn)

    def serve_connection(self, conn: socket.socket) -> None:
        """One forwarded message: check the token, handle, answer."""
        conn.settimeout(REQUEST_READ_TIMEOUT_S)
        try:
            token = recv_frame(conn)
            if not hmac.compare_digest(token, self.token):
                send_frames(conn, b"wrong token: the worker restarted; send the message again")
                return
            message, context = decode_message(recv_frame(conn)), decode_context(recv_frame(conn))
        except (EOFError, OSError) as exc:
            _say(f"a ClientApp connection ended before its message arrived: {exc}")
            return
        conn.settimeout(None)
        reply = self.handle_message(message, context)
        try:
            send_frames(conn, STATUS_OK.encode(), encode_message(reply), encode_context(context))
        except OSError as exc:  # the ClientApp process is gone (its SuperNode stopped): nobody to answer
            _say(f"could not return the reply to {message.metadata.message_type!r}: {exc}")

    def handle_message(self, message: Message, context: Context) -> Message:
        """The handlers' reply (or the error reply), with the operator's screen lines around it."""
        self.last_message = time.monotonic()
        if context.run_id != self.run_id:
            if self.run_id is not None:
                self._clear(f"run {self.run_id} is over")
            self.run_id = context.run_id
            _say(f"run {context.run_id} ({_federation(message)}) started")
        kind = message.metadata.message_type
        t0 = time.perf_counter()
        try:
            reply = self.handle(message, context)
        except Exception as exc:  # noqa: BLE001 - every failure becomes the site's error reply
            traceback.print_exc()
            _say(f"{kind} failed: {exc}")
            return handle_error_reply(message, exc)
        seconds = time.perf_counter() - t0
        if reply.has_error():
            _say(f"{kind} failed: {reply.error.reason}")
        elif kind == MSG_TRAIN and METRICS in reply.content:
            _say(_training_line(message, reply, seconds))
        elif kind == MSG_SITE_OUTPUTS:
            from stsfl.client.data.site_prepare import site_outputs_dir

            folder = site_outputs_dir(self.site, self.site_yaml) / _federation(message)
            _say(f"run {self.run_id} ended; this site's outputs: {folder}")
            self._clear(None)
        return reply

    def _clear(self, why: str | None) -> None:
        self.clear()
        gc.collect()
        self.run_id = None
        if why:
            _say(f"{why}: its data is cleared from memory")

    def _clear_when_idle(self) -> None:
        if self.run_id is not None and time.monotonic() - self.last_message > self.idle_clear_s:
            self._clear(f"run {self.run_id} sent nothing for {self.idle_clear_s:.0f} s")

    def _parent_alive(self) -> bool:
        return self.parent is None or os.getppid() == self.parent


def _listening(path: Path) -> bool:
    """Whether a live process accepts connections on the socket at `path`."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            with unix_address(path) as address:
                probe.connect(address)
        except OSError:
            return False
    return True


def _federation(message: Message) -> str:
    cfg = message.content.config_records.get(CONFIG) if message.has_content() else None
    return str(cfg.get(record_key(RunConfig, "federation"), "?")) if cfg is not None else "?"


def _training_line(message: Message, reply: Message, seconds: float) -> str:
    cfg = RoundConfig.from_record(message.content[CONFIG])
    loss = reply.content[METRICS].get("train-loss-fused")
    return (
        f"round {cfg.server_round}: trained {cfg.run.recipe.epochs_per_round} local epoch(s)"
        + (f", loss {float(loss):.4f}" if loss is not None else "")
        + f" in {seconds:.1f} s"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="stsfl.client.federation.site_worker", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--site", required=True, help="site YAML")
    parser.add_argument("--dir", required=True, type=Path, help="folder of the socket and token")
    parser.add_argument("--parent", type=int, help="exit when this process (sts-client) is gone")
    parser.add_argument("--idle-clear-s", type=float, default=3600.0, help="drop a run's data after this long without messages")
    args = parser.parse_args(argv)
    site_yaml = Path(args.site).resolve()
    site = load_config(site_yaml, SiteConfig)
    if site.threads:
        import torch

        torch.set_num_threads(site.threads)
    # The imports every message paid in its own process, paid once here: the handlers and every task's site side.
    from stsfl.common.tasks import TASKS

    for spec in TASKS.values():
        spec.load_site()
    from stsfl.client.federation.site_app import site_app
    from stsfl.client.federation.site_task import clear_site_data, keep_site_data

    keep_site_data()
    SiteWorker(site, site_yaml, args.dir, site_app, clear_site_data, args.parent, args.idle_clear_s).serve_forever()


if __name__ == "__main__":
    sys.exit(main())
