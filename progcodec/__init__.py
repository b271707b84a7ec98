"""progcodec: a progressive learned image codec; any byte prefix of a .pic file decodes."""
from .codec import CodecError, decode, decode_detailed, encode, info, truncate
from .container import FormatError

__all__ = ["encode", "decode", "decode_detailed", "truncate", "info", "CodecError", "FormatError"]
__version__ = "0.1.0"
