"""Fuzz the decoder: damaged and hostile .nvc streams must only ever raise nvc's own error, quickly.

    python benchmarks/fuzz_decode.py --cases 10000 [--seed 0] [--json out.json]

Each case takes a small valid stream (made here with the shipped model) and applies one mutation:
truncation, bit flips in the header or payloads, header fields that lie (sizes up to 2^32-1, frame
counts, payload lengths past the end; CRCs recomputed so the lie gets past the checksum), payload
mutations with the frame CRC recomputed (so hostile data reaches the entropy decoder), post-filter modes and
parameters changed with the CRC recomputed (so they reach the post-filter's parser), or random bytes.
It then parses and decodes the whole stream. Allowed outcomes: success, or an ``NvcError`` (a
``ValueError``). Anything else, or a case slower than 5 s, is a failure. The result also names the
slowest case (its index, mutation and outcome), so it can be replayed. The test suite runs a short
pass of the same harness (tests/test_fuzz.py).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import struct
import sys
import tempfile
import time
import zlib
from collections import Counter
from functools import lru_cache
from pathlib import Path

MUTATIONS = ("truncate", "flip_header", "flip_payload", "lie_header", "lie_length", "payload_crc_fixed", "rans_escape",
             "filter_crc_fixed", "random")


def make_stream(path: Path) -> bytes:
    """A small valid stream: 3 frames (I P P) of 64x48 from the built-in sample."""
    from nvc import api

    from nvc.io import VideoInfo
    from nvc.io import open as open_video
    from nvc.sample import sample_frames

    src = path.with_suffix(".y4m")
    frames = [type(f)(f.y[:48, :64].copy(), f.u[:24, :32].copy(), f.v[:24, :32].copy()) for f in sample_frames(3)]
    with open_video(src, "w", info=VideoInfo(64, 48, __import__("fractions").Fraction(30), 3), force=True) as w:
        for f in frames:
            w.write(f)
    api.encode(src, path, quality=2, gop=8, device="cpu", force=True)
    return path.read_bytes()


def _header_len(data: bytes) -> int:
    return struct.unpack_from("<H", data, 6)[0]


def _fix_header_crc(buf: bytearray) -> None:
    n = _header_len(bytes(buf))
    if 8 <= n <= len(buf):
        struct.pack_into("<I", buf, n - 4, zlib.crc32(bytes(buf[: n - 4])))


@lru_cache(maxsize=4)
def _records(stream: bytes) -> tuple[tuple[int, int, int], ...]:
    """(record offset, bytes before its payload, payload length) of each frame record of a whole, valid stream
    (the seed), parsed with nvc.bitstream's declaration of the file (``NVC_STREAM``, ``RECORD_DATA``)."""
    from nvc.bitstream import NVC_STREAM, RECORD_DATA

    out = []
    for r in NVC_STREAM.parse(stream).frames:
        new = int(r.body.value.head.flags.filter) == 2
        n = len(RECORD_DATA.parse(r.body.value.data, new_filter=new).payload)
        out.append((r.body.offset1, r.body.length - n, n))
    return tuple(out)


def mutate(data: bytes, kind: str, rng: random.Random) -> bytes:
    buf = bytearray(data)
    hlen = _header_len(data)
    if kind == "truncate":
        return bytes(buf[: rng.randrange(0, len(buf))])
    if kind == "flip_header":
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(0, hlen)
            buf[i] ^= 1 << rng.randrange(8)
        return bytes(buf)
    if kind == "flip_payload":
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(hlen, len(buf))
            buf[i] ^= 1 << rng.randrange(8)
        return bytes(buf)
    if kind == "lie_header":
        # width, height, padded sizes, fps, frame_count (u32 at 28..52) and gop (u16 at 56)
        off = rng.choice([28, 32, 36, 40, 44, 48, 52])
        val = rng.choice([0, 1, 2**16, 2**31 - 1, 2**32 - 1, rng.randrange(2**32)])
        struct.pack_into("<I", buf, off, val)
        _fix_header_crc(buf)
        return bytes(buf)
    if kind == "lie_length":
        # a frame record's payload length (its LEB128 at record offset 5), replaced by a lie
        import construct

        off, head, _ = rng.choice(_records(data))
        lie = rng.choice([2**32 - 1, 2**28, len(buf), rng.randrange(2**32), rng.randrange(64)])
        return bytes(buf[: off + 5]) + construct.VarInt.build(lie) + bytes(buf[off + head :])
    if kind == "payload_crc_fixed":
        return _mutate_payload_fix_crc(buf, rng)
    if kind == "rans_escape":
        return _mutate_payload_fix_crc(buf, rng, how="rans_escape")
    if kind == "filter_crc_fixed":
        return _mutate_filter_fix_crc(buf, rng)
    n = rng.randrange(0, 4096)
    if rng.random() < 0.5:  # random bytes behind a valid magic+version
        return bytes(buf[:6]) + rng.randbytes(n)
    return rng.randbytes(n)


def _rans_escape(payload: bytes, rng: random.Random) -> bytes:
    """One substream overwritten in place with rANS data built to make a value escape with a huge
    number of 4-bit chunks (runs of 0xFF: CompressAI's decoder reads far past such a string)."""
    from nvc.bitstream import decode_payload
    from nvc.errors import NvcError

    try:
        p = decode_payload(payload)
    except NvcError:
        return payload
    if not p.strings:
        return payload
    k = rng.randrange(len(p.strings))
    start = len(payload) - sum(len(x) for x in p.strings[k:])  # the substreams end the payload
    n = len(p.strings[k])
    data = bytearray(rng.randbytes(n))
    ff = rng.choice([n, n // 8, n // 16])
    at = rng.choice([0, min(8, n), max(0, n - ff)])
    data[:8] = b"\xff" * min(8, n)
    data[at:at + ff] = b"\xff" * len(data[at:at + ff])
    out = bytearray(payload)
    out[start:start + n] = data
    return bytes(out)


def _mutate_payload_fix_crc(buf: bytearray, rng: random.Random, how: str | None = None) -> bytes:
    """Damages one frame's payload and recomputes that record's CRC: hostile data reaches the decoder."""
    records = _records(bytes(buf))
    if not records:
        return bytes(buf)
    off, head, length = rng.choice(records)
    p0, p1 = off + head, off + head + length
    payload = bytearray(buf[p0:p1])
    if how == "rans_escape":
        payload = bytearray(_rans_escape(bytes(payload), rng))
    else:
        how = rng.choice(["flip", "zero", "random", "fields"])
    if how == "flip" and payload:
        for _ in range(rng.randint(1, 16)):
            i = rng.randrange(len(payload))
            payload[i] ^= 1 << rng.randrange(8)
    elif how == "zero":
        start = rng.randrange(len(payload) or 1)
        payload[start:] = bytes(len(payload) - start)
    elif how == "random":
        payload[8:] = rng.randbytes(max(0, len(payload) - 8))
    elif how == "fields" and len(payload) >= 2:  # the payload's own fields: its layout byte and the next
        payload[:2] = rng.randbytes(2)
    buf[p0:p1] = payload
    struct.pack_into("<I", buf, p1, zlib.crc32(bytes(buf[off:p1])))
    return bytes(buf)


def _mutate_filter_fix_crc(buf: bytearray, rng: random.Random) -> bytes:
    """Changes one record's post-filter mode bits, or damages a NEW filter's parameters (their length byte or
    bits), and recomputes that record's CRC: hostile filters reach the decoder's parser and state rules."""
    off, before, length = rng.choice(_records(bytes(buf)))
    head = 5 + next(k for k in range(5) if buf[off + 5 + k] < 0x80) + 1  # sync, flags, quality, seq, LEB128 length
    if head == before or rng.random() < 0.3:  # a frame without parameters, or a new mode (0..3) in the flags
        buf[off + 2] = (buf[off + 2] & 0xF3) | rng.randrange(4) << 2
    elif rng.random() < 0.3:  # the parameters' length byte
        buf[off + head] = rng.randrange(256)
    else:
        for _ in range(rng.randint(1, 6)):
            i = rng.randrange(off + head + 1, off + before)
            buf[i] ^= 1 << rng.randrange(8)
    end = off + before + length
    struct.pack_into("<I", buf, end, zlib.crc32(bytes(buf[off:end])))
    return bytes(buf)


class Harness:
    """Decodes byte strings as .nvc streams with one loaded model, classifying the outcomes."""

    def __init__(self, workdir: Path) -> None:
        import torch

        from nvc.models import load

        torch.set_num_threads(1)
        self.workdir = workdir
        self.model = load("nvc-lite")
        self.seed_stream = make_stream(workdir / "seed.nvc")

    def decode_bytes(self, data: bytes) -> str:
        """Returns 'ok' or the NvcError class name; lets any other exception propagate."""
        import torch

        from nvc import bitstream
        from nvc.codec import Decoder
        from nvc.errors import NvcError

        p = self.workdir / "case.nvc"
        p.write_bytes(data)
        try:
            with bitstream.open(p, "r") as reader:
                dec = Decoder.for_stream(self.model, reader.header, torch.device("cpu"))
                for rec in reader:
                    dec.decode(rec)
            return "ok"
        except NvcError as e:
            return type(e).__name__


def run(cases: int, seed: int, workdir: Path, limit_s: float = 5.0) -> dict:
    h = Harness(workdir)
    rng = random.Random(seed)
    outcomes: Counter[str] = Counter()
    per_kind: Counter[str] = Counter()
    failures: list[dict] = []
    slowest = {"case": None, "kind": None, "outcome": None, "seconds": 0.0}
    t_start = time.perf_counter()
    for i in range(cases):
        kind = MUTATIONS[i % len(MUTATIONS)]
        data = mutate(h.seed_stream, kind, rng)
        t0 = time.perf_counter()
        try:
            outcome = h.decode_bytes(data)
        except Exception as e:  # noqa: BLE001 - the point: record what escaped
            outcome = f"ESCAPED {type(e).__name__}: {str(e)[:120]}"
            failures.append({"case": i, "kind": kind, "error": outcome})
        dt = time.perf_counter() - t0
        if dt > slowest["seconds"]:
            slowest = {"case": i, "kind": kind, "outcome": outcome, "seconds": dt}
        if dt > limit_s:
            failures.append({"case": i, "kind": kind, "error": f"took {dt:.1f} s"})
        outcomes[outcome] += 1
        per_kind[kind] += 1
    return {
        "cases": cases, "seed": seed, "seconds": round(time.perf_counter() - t_start, 1),
        "slowest_case_s": round(slowest["seconds"], 3), "slowest_case": {**slowest, "seconds": round(slowest["seconds"], 3)},
        "outcomes": dict(outcomes.most_common()), "mutations": dict(per_kind),
        "failures": failures,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        res = run(a.cases, a.seed, Path(d))
    text = json.dumps(res, indent=1)
    print(text)
    if a.json:
        a.json.write_text(text + "\n")
    return 1 if res["failures"] else 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    sys.exit(main())
