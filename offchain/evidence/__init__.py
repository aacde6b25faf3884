"""Evidence restoration: anchored frames back into video a browser can play."""

from .video import (
    MuxResult,
    ProbeResult,
    RestoreReport,
    Span,
    SpanOutput,
    decode_frames,
    encode_frames_to_mp4,
    probe_mp4,
    reencode_span_to_mp4,
    remux_to_mp4,
    restore_spans,
)

__all__ = [
    "MuxResult",
    "ProbeResult",
    "RestoreReport",
    "Span",
    "SpanOutput",
    "decode_frames",
    "encode_frames_to_mp4",
    "probe_mp4",
    "reencode_span_to_mp4",
    "remux_to_mp4",
    "restore_spans",
]
