import threading
import time

import pytest

from streammask.pipeline.threads import SinkThread, prefetch


def test_prefetch_yields_in_order_and_forwards_errors():
    def gen():
        yield 1
        yield 2
        raise ValueError("bad packet")

    out = []
    with pytest.raises(ValueError, match="bad packet"):
        for x in prefetch(gen(), maxsize=1):
            out.append(x)
    assert out == [1, 2]


def test_prefetch_error_does_not_wait_behind_queued_items():
    """A failed producer stops the consumer at its next item, not after the items already queued."""
    queued = threading.Event()

    def gen():
        for i in range(4):
            yield i
        queued.set()  # items 1..3 sit in the queue now (item 0 may have been taken)
        raise ValueError("decoder died")

    out = []
    with pytest.raises(ValueError, match="decoder died"):
        for x in prefetch(gen(), maxsize=4):
            out.append(x)
            assert queued.wait(5)
            time.sleep(0.05)  # let the failure be recorded before the next item is asked for
    assert len(out) <= 2, out


def test_prefetch_consumer_stop_stops_producer():
    produced = []
    stopped = threading.Event()

    def gen():
        try:
            for i in range(10_000):
                produced.append(i)
                yield i
        finally:
            stopped.set()

    for x in prefetch(gen(), maxsize=2):
        if x == 3:
            break
    assert stopped.wait(2)
    assert len(produced) < 10  # bounded queue: the producer never ran far ahead


def test_sink_thread_error_surfaces_on_put_or_close():
    def work(item):
        if item == 2:
            raise OSError("disk full")

    sink = SinkThread(work, maxsize=1)
    with pytest.raises(OSError, match="disk full"):
        for i in range(100):
            sink.put(i)
            time.sleep(0.001)
        sink.close()
    sink.abort()
