"""Camera side: encoded-frame sources and the sample footage that feeds them."""

from .samples import (
    SampleChecksumError,
    SampleError,
    SampleFetchError,
    sample_path,
    synthetic_clip,
)
from .sources import CodecConfig, EncodedFrame, FileSource, SourceError

__all__ = [
    "CodecConfig",
    "EncodedFrame",
    "FileSource",
    "SampleChecksumError",
    "SampleError",
    "SampleFetchError",
    "SourceError",
    "sample_path",
    "synthetic_clip",
]
