"""A small RTSP server that serves (and loops) an H.264 mp4 file, for tests and demos.

Run it with Debian's interpreter, which is the one that sees GStreamer's `gi` bindings, and with
`-P` so that the script's own folder (which holds `anpr/types.py`) does not shadow the stdlib `types`:

    /usr/bin/python3 -P anpr/rtsp_server.py fixtures/bay_arrival.mp4 --port 0 --loop

It prints one line `READY rtsp://127.0.0.1:<port>/<mount>` on stdout once it listens (port 0 picks a
free port), then serves until SIGTERM/SIGINT. `--auth user:password` requires Basic credentials.
This file imports nothing from the project so that it runs outside the venv.
Needs: gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good
gstreamer1.0-plugins-bad python3-gi.
"""

from __future__ import annotations

import argparse
import base64
import signal
import sys
from pathlib import Path
from typing import Any

import gi  # type: ignore[import-not-found]

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # type: ignore[import-not-found]  # noqa: E402


def _pipeline(path: Path) -> str:
    # Pass the H.264 through untouched (no re-encode: cheap on a shared CPU). config-interval=-1
    # repeats SPS/PPS with every key frame so a client joining mid-stream can start decoding.
    loc = str(path).replace("\\", "\\\\").replace('"', '\\"')
    parse = "h264parse name=parse config-interval=-1"
    return f'( filesrc location="{loc}" ! qtdemux ! {parse} ! rtph264pay name=pay0 pt=96 )'


def _loop_on_eos(media: GstRtspServer.RTSPMedia) -> None:
    """Seek back to the start when the file ends, so the stream never ends."""
    element = media.get_element()
    parse = element.get_by_name("parse")
    if parse is None:
        return

    def seek_to_start() -> bool:
        # A flushing seek is needed: a non-flushing one stalls the pipeline after EOS.
        pipeline = element.get_parent() or element
        pipeline.seek_simple(Gst.Format.TIME, Gst.SeekFlags.FLUSH | Gst.SeekFlags.KEY_UNIT, 0)
        return False

    def probe(_pad: Gst.Pad, info: Gst.PadProbeInfo) -> Gst.PadProbeReturn:
        event = info.get_event()
        if event is not None and event.type == Gst.EventType.EOS:
            GLib.idle_add(seek_to_start)
            return Gst.PadProbeReturn.DROP
        return Gst.PadProbeReturn.OK

    parse.get_static_pad("src").add_probe(Gst.PadProbeType.EVENT_DOWNSTREAM, probe)


def build_server(args: argparse.Namespace) -> GstRtspServer.RTSPServer:
    server = GstRtspServer.RTSPServer()
    server.set_address(args.address)
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(_pipeline(args.file))
    factory.set_shared(True)  # one pipeline for all clients, like a real camera
    if args.loop:
        factory.connect("media-configure", lambda _f, media: _loop_on_eos(media))
    if args.auth:
        user, _, password = args.auth.partition(":")
        auth = GstRtspServer.RTSPAuth()
        token = GstRtspServer.RTSPToken()
        token.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, user)
        basic = base64.b64encode(f"{user}:{password}".encode()).decode()
        auth.add_basic(basic, token)
        server.set_auth(auth)
        perms = GstRtspServer.RTSPPermissions()
        perms.add_permission_for_role(user, GstRtspServer.RTSP_PERM_MEDIA_FACTORY_ACCESS, True)
        perms.add_permission_for_role(user, GstRtspServer.RTSP_PERM_MEDIA_FACTORY_CONSTRUCT, True)
        factory.set_permissions(perms)
    server.get_mount_points().add_factory("/" + args.mount.strip("/"), factory)
    return server


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Serve an mp4 file over RTSP (tests and demos).")
    ap.add_argument("file", type=Path, help="H.264 mp4 file")
    ap.add_argument("--address", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    ap.add_argument("--port", type=int, default=0, help="listen port, 0 = pick a free one")
    ap.add_argument("--mount", default="cam", help="path part of the URL (default cam)")
    ap.add_argument("--loop", action="store_true", help="start over at the end of the file")
    ap.add_argument("--auth", default=None, help="require Basic credentials user:password")
    args = ap.parse_args(argv)
    if not args.file.is_file():
        print(f"no such file: {args.file}", file=sys.stderr)
        return 2
    Gst.init(None)
    server = build_server(args)
    loop = GLib.MainLoop()
    if server.attach(None) == 0:
        print(f"cannot listen on {args.address}:{args.port}", file=sys.stderr)
        return 1
    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, _quit, loop)
    print(f"READY rtsp://{args.address}:{server.get_bound_port()}/{args.mount.strip('/')}", flush=True)
    loop.run()
    return 0


def _quit(loop: Any) -> bool:
    loop.quit()
    return False


if __name__ == "__main__":
    sys.exit(main())
