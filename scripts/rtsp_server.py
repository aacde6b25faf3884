#!/usr/bin/python3
"""Serve an H.264 MP4 as an RTSP camera on loopback, with GStreamer's RTSP server: what the
live-camera tests stream from, and a way to try `frameledger camera run --source rtsp://…` by hand.

    /usr/bin/python3 scripts/rtsp_server.py --file clip.mp4 [--port 0] [--path /cam] [--audio aac]

Runs under the system Python, which has GStreamer's bindings (`make rtsp-deps` installs them:
python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
gstreamer1.0-rtsp). Prints ``READY rtsp://127.0.0.1:PORT/PATH`` once it listens, then serves until
SIGTERM / SIGINT. The packets are the file's own (demuxed, re-packetised as RTP by rtph264pay,
never re-encoded), played at the file's pace; each client gets its own session from the start.
With ``--audio CODEC`` the file's first audio track is served too, as a second RTP stream (AAC as
MPEG-4 generic, Opus, G.711 µ-law / A-law), its packets the file's own as well.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


# The file's audio packets, re-packetised as RTP (never decoded).
AUDIO_PAY = {"aac": "aacparse ! rtpmp4gpay", "opus": "opusparse ! rtpopuspay", "pcm_mulaw": "rtppcmupay",
             "pcm_alaw": "rtppcmapay"}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--file", required=True, help="an MP4 with one H.264 video track")
    p.add_argument("--port", type=int, default=0, help="loopback port (default: any free one)")
    p.add_argument("--path", default="/cam", help="mount point (default /cam)")
    p.add_argument("--audio", choices=sorted(AUDIO_PAY), help="also serve the file's audio track, in this codec")
    args = p.parse_args()
    path = Path(args.file).resolve()
    if not path.is_file():
        print(f"error: no file {path}", file=sys.stderr)
        return 2
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    location = str(path).replace('"', '\\"')
    demux = "matroskademux" if path.suffix.lower() in (".mkv", ".webm") else "qtdemux"
    if args.audio:
        factory.set_launch(f'( filesrc location="{location}" ! {demux} name=d d.video_0 ! queue ! h264parse ! '
                           f'rtph264pay name=pay0 pt=96 d.audio_0 ! queue ! {AUDIO_PAY[args.audio]} name=pay1 pt=97 )')
    else:
        factory.set_launch(f'( filesrc location="{location}" ! {demux} ! h264parse ! rtph264pay name=pay0 pt=96 )')
    factory.set_shared(False)
    server.get_mount_points().add_factory(args.path, factory)
    if server.attach(None) == 0:
        print(f"error: cannot listen on 127.0.0.1:{args.port}", file=sys.stderr)
        return 2
    loop = GLib.MainLoop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, loop.quit)
    print(f"READY rtsp://127.0.0.1:{server.get_bound_port()}{args.path}", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
