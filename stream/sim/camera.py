"""A live RTSP test camera: GStreamer's RTSP server serving ``videotestsrc`` as H.264.

Used by tests and ``scripts/bench_live.py`` to inject camera faults (server killed, stalled
with SIGSTOP, restarted at another size, wrong credentials). The server itself runs under
Debian's ``/usr/bin/python3`` (GObject introspection is not in the venv)::

    /usr/bin/python3 stream/sim/camera.py --port 8554 --path cam --width 160 --height 96 \
        --fps 15 [--user U --password P]

and :class:`RtspTestServer` starts and stops it from any Python as a subprocess. Needs the
Debian packages ``python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-good
gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-x`` (see
:func:`missing_requirements`).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

SYSTEM_PYTHON = "/usr/bin/python3"
DEBIAN_PACKAGES = (
    "python3-gi",
    "gir1.2-gst-rtsp-server-1.0",
    "gstreamer1.0-plugins-good",
    "gstreamer1.0-plugins-bad",
    "gstreamer1.0-plugins-ugly",
    "gstreamer1.0-x",  # clockoverlay (pango); without it every DESCRIBE answers 503
)
_PROBE = (
    "import gi; gi.require_version('Gst','1.0'); gi.require_version('GstRtspServer','1.0');"
    "from gi.repository import Gst, GstRtspServer; Gst.init(None);"
    "import sys; sys.exit(0 if all(Gst.ElementFactory.find(e) for e in "
    "('videotestsrc','clockoverlay','x264enc','rtph264pay')) else 3)"
)


def missing_requirements() -> str | None:
    """None when the server can run here, else one line saying what to install."""
    if not Path(SYSTEM_PYTHON).exists():
        return f"{SYSTEM_PYTHON} not found"
    try:
        probe = subprocess.run(
            [SYSTEM_PYTHON, "-c", _PROBE], capture_output=True, timeout=20, check=False
        )
    except subprocess.TimeoutExpired:
        return "probing GStreamer timed out"
    if probe.returncode != 0:
        return "GStreamer RTSP server missing: apt-get install -y " + " ".join(DEBIAN_PACKAGES)
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RtspTestServer:
    """Run the test camera as a subprocess; ``url`` is where PyAV reads it.

    Args:
        port: TCP port on 127.0.0.1 (the same port survives ``restart``).
        width, height, fps: the live test pattern, pixels and frames/s.
        user, password: require RTSP basic auth when both are given.
        path: mount point, ``rtsp://127.0.0.1:PORT/PATH``.
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        width: int = 160,
        height: int = 96,
        fps: int = 15,
        user: str | None = None,
        password: str | None = None,
        path: str = "cam",
    ) -> None:
        self.port = port or free_port()
        self.width, self.height, self.fps = width, height, fps
        self.user, self.password, self.path = user, password, path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}/{self.path}"

    def url_with(self, user: str, password: str) -> str:
        return f"rtsp://{user}:{password}@127.0.0.1:{self.port}/{self.path}"

    def start(self, timeout_s: float = 15.0) -> RtspTestServer:
        """Start and wait until the port accepts connections (at most ``timeout_s``)."""
        cmd = [
            SYSTEM_PYTHON,
            str(Path(__file__).resolve()),
            "--port",
            str(self.port),
            "--path",
            self.path,
            "--width",
            str(self.width),
            "--height",
            str(self.height),
            "--fps",
            str(self.fps),
        ]
        if self.user and self.password:
            cmd += ["--user", self.user, "--password", self.password]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"RTSP test server exited with code {self.proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"RTSP test server not listening on port {self.port} after {timeout_s}s")

    def stop(self) -> None:
        """Kill the server (a camera that vanishes) and wait for it to exit."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        self.proc = None

    def pause(self) -> None:
        """SIGSTOP: the connection stays open but no packet arrives (a frozen camera)."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGCONT)

    def restart(self, **changes: int) -> None:
        """Stop, apply ``changes`` (e.g. ``width=128``), start again on the same port."""
        self.stop()
        for key, value in changes.items():
            setattr(self, key, value)
        deadline = time.monotonic() + 10
        while True:  # the old socket may linger a moment
            try:
                self.start()
                return
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)

    def __enter__(self) -> RtspTestServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _serve(args: argparse.Namespace) -> None:
    """Run under /usr/bin/python3: serve the pattern until killed."""
    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import GLib, Gst, GstRtspServer

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(
        f"( videotestsrc is-live=true pattern=ball ! video/x-raw,width={args.width},"
        f"height={args.height},framerate={args.fps}/1 ! clockoverlay ! "
        f"x264enc tune=zerolatency speed-preset=ultrafast key-int-max={args.fps} ! "
        "rtph264pay name=pay0 pt=96 config-interval=1 )"
    )
    factory.set_shared(True)
    if args.user and args.password:
        auth = GstRtspServer.RTSPAuth()
        token = GstRtspServer.RTSPToken()
        token.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, "user")
        auth.add_basic(GstRtspServer.RTSPAuth.make_basic(args.user, args.password), token)
        server.set_auth(auth)
        perms = GstRtspServer.RTSPPermissions()
        perms.add_role_from_structure(
            Gst.Structure.new_from_string(
                "user, media.factory.access=(boolean)true, media.factory.construct=(boolean)true"
            )
        )
        factory.set_permissions(perms)
    server.get_mount_points().add_factory(f"/{args.path}", factory)
    server.attach(None)
    loop = GLib.MainLoop()
    signal.signal(signal.SIGTERM, lambda *_: loop.quit())
    loop.run()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="serve a live H.264 test pattern over RTSP")
    p.add_argument("--port", type=int, default=8554)
    p.add_argument("--path", default="cam")
    p.add_argument("--width", type=int, default=160)
    p.add_argument("--height", type=int, default=96)
    p.add_argument("--fps", type=int, default=15)
    p.add_argument("--user")
    p.add_argument("--password")
    p.add_argument(
        "--check", action="store_true", help="exit 0 if the server can run here, else say why"
    )
    args = p.parse_args(argv)
    if args.check:
        missing = missing_requirements()
        if missing:
            raise SystemExit(missing)
        return
    _serve(args)


if __name__ == "__main__":
    main()
