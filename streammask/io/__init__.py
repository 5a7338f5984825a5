"""Video in and out with PyAV: decoding and probing, the output writers, audio, mattes, joins.

* :mod:`.video` — :func:`probe`, :func:`read_batches`, packet timestamps;
* :mod:`.writers` — every output format (:data:`~.writers.FORMATS`), written under a temporary name;
* :mod:`.audio` — the source's audio copied (or transcoded) into the outputs;
* :mod:`.matte` — compositing the matte (straight, premultiplied, over a colour or a background);
* :mod:`.concat` — outputs written in pieces joined without re-encoding.
"""

from .video import FrameBatch, VideoInfo, probe, read_batches

__all__ = ["probe", "read_batches", "VideoInfo", "FrameBatch"]
