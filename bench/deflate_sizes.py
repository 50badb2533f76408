"""What permessage-deflate buys and costs on chat messages, without a server (seconds to run).

    bench/.venv/bin/python bench/deflate_sizes.py

On the 500 JSON chat messages of ``fanload.py --chat`` (~300 bytes, text and ids varying):

* the size ratio of each message compressed alone (plezi: no context takeover, one compression
  for all subscribers) and of the stream compressed with context takeover (what a compressor
  kept per connection gets, for 4 KiB and 32 KiB windows);
* the bytes saved by compressing the last N bytes of each message alone, for N around the
  threshold (``plezi.protocol.deflate.MIN_SIZE``), and the time of one compression;
* the memory zlib holds for a compressor and a decompressor (traced: CPython allocates zlib's
  state through PyMem_RawMalloc), for the window plezi picks for a 300-byte message and for
  32 KiB: what a connection would keep with context takeover, and what plezi holds only while
  a message is compressed or inflated.
"""

from __future__ import annotations

import statistics
import sys
import timeit
import tracemalloc
import zlib
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.argv[1:] = []  # fanload parses nothing at import; keep it that way

from fanload import CHATS  # noqa: E402

from plezi.protocol.deflate import MIN_SIZE, deflate_payload  # noqa: E402


def takeover_ratio(bits: int) -> float:
    c = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -bits)
    out = sum(len(c.compress(m) + c.flush(zlib.Z_SYNC_FLUSH)) - 4 for m in CHATS)
    return out / sum(len(m) for m in CHATS)


def held(make: Callable[[int], object], bits: int) -> int:
    """Bytes traced while the object ``make(bits)`` returns is alive (and has been used once)."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        obj = make(bits)
        after = tracemalloc.get_traced_memory()[0]
        del obj
        return after - before
    finally:
        tracemalloc.stop()


def used_compressor(bits: int) -> object:
    c = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -bits)
    c.compress(CHATS[0])
    c.flush(zlib.Z_SYNC_FLUSH)
    return c


def used_decompressor(bits: int) -> object:
    d = zlib.decompressobj(-bits)
    d.decompress(deflate_payload(CHATS[0] * 200) + b"\x00\x00\xff\xff")
    return d


def main() -> None:
    total = sum(len(m) for m in CHATS)
    alone = sum(len(deflate_payload(m)) for m in CHATS) / total
    print(f"{len(CHATS)} messages, {statistics.mean(len(m) for m in CHATS):.0f} bytes on average")
    print(f"compressed alone (plezi):          {alone:.2f} of the size")
    for bits in (12, 15):
        print(f"context takeover, {1 << bits >> 10:2} KiB window:   {takeover_ratio(bits):.2f}")
    print(f"\nbytes saved compressing the last N bytes alone (threshold: {MIN_SIZE})")
    for n in (64, 100, 128, 160, 200, 300):
        saved = [len(m[-n:]) - len(deflate_payload(m[-n:])) for m in CHATS]
        print(
            f"  N={n:3}: min {min(saved):3}, mean {statistics.mean(saved):5.1f}, max {max(saved)}"
        )
    per = timeit.timeit(lambda: deflate_payload(CHATS[0]), number=2000) / 2000
    print(f"one compression of a ~300-byte message: {per * 1e6:.1f} us")
    small = max(9, (len(CHATS[0]) - 1).bit_length())
    print("\nzlib memory held (KiB)")
    for bits in (small, 12, 15):
        compressor = held(used_compressor, bits) / 1024
        decompressor = held(used_decompressor, bits) / 1024
        window = f"{(1 << bits) / 1024:g} KiB"
        print(
            f"  {window:>8} window: compressor {compressor:6.1f}, decompressor {decompressor:5.1f}"
        )


if __name__ == "__main__":
    main()
