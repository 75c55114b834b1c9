"""`sts-client`'s side of the site worker: start it, restart it when it dies, stop it.

The worker (stsfl.client.federation.site_worker) writes to the same log as the SuperNode, so its lines reach
the operator's screen. When it dies, the cause (exit code or signal) goes into `worker.exit` in
its folder, where the ClientApp process whose message it was handling reads it for the error
reply (stsfl.client.federation.worker_channel), and a new worker is started; one that keeps dying at start
is restarted after a growing pause (up to a minute) instead of in a tight loop.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from stsfl.client.federation.worker_channel import EXIT_NOTE_NAME, worker_dir
from stsfl.common.config import SiteConfig

QUICK_DEATH_S = 30.0  # a worker that dies sooner than this after its start makes the next start wait
MAX_RESTART_PAUSE_S = 60.0


def site_worker_dir(site: SiteConfig, site_yaml: Path) -> Path:
    """<site state folder>/worker. The state folder is the YAML's `cache_dir` (relative to the YAML's
    folder), else <root>/.stsfl: stsfl.client.data.site_prepare.site_state_dir, which sts-client does not
    import (it brings in torch and the image pipelines; the worker pays for those, once)."""
    if site.cache_dir is None:
        return worker_dir(site.root_dir(site_yaml) / ".stsfl")
    state = Path(site.cache_dir)
    return worker_dir(state if state.is_absolute() else Path(site_yaml).resolve().parent / state)


def exit_cause(code: int) -> str:
    """'exit code 3' or 'killed by SIGKILL' for a Popen return code."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class WorkerSupervisor:
    """One site's worker process, kept running while `check()` is called (every half second)."""

    def __init__(self, site_yaml: Path, folder: Path, log_path: Path, env: dict[str, str] | None = None, say=print):
        self.site_yaml, self.folder, self.log_path = Path(site_yaml).resolve(), Path(folder), Path(log_path)
        self.env, self.say = env, say
        self.proc: subprocess.Popen | None = None
        self.started_at = 0.0
        self.pause = 0.0
        self.restart_at: float | None = None
        self.restarts = 0

    def start(self) -> None:
        cmd = [
            sys.executable,
            "-m",
            "stsfl.client.federation.site_worker",
            "--site",
            str(self.site_yaml),
            "--dir",
            str(self.folder),
            "--parent",
            str(os.getpid()),
        ]
        with open(self.log_path, "ab") as log:
            # its own session: a Ctrl-C at the terminal reaches sts-client, which stops the worker itself
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
        self.started_at = time.monotonic()
        self.restart_at = None

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def check(self) -> None:
        """Restart the worker if it died (after noting why); call it regularly."""
        if self.proc is None:
            return
        if self.restart_at is not None:
            if time.monotonic() >= self.restart_at:
                self.start()
            return
        code = self.proc.poll()
        if code is None:
            return
        cause = exit_cause(code)
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / EXIT_NOTE_NAME).write_text(f"the worker (pid {self.proc.pid}) {cause}\n", encoding="utf-8")
        lived = time.monotonic() - self.started_at
        self.pause = min(max(2 * self.pause, 1.0), MAX_RESTART_PAUSE_S) if lived < QUICK_DEATH_S else 0.0
        self.restarts += 1
        self.say(
            f"site worker (pid {self.proc.pid}) {cause} after {lived:.0f} s; "
            + (f"starting a new one in {self.pause:.0f} s" if self.pause else "starting a new one")
        )
        self.restart_at = time.monotonic() + self.pause

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
