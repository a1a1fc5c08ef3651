"""Table tests for the splicer's frame scanner (`ocpp_link.wire`): whatever way the bytes are cut into
reads, the output is the input byte for byte (less the cut pongs), and the tap sees every message."""

from __future__ import annotations

import random
import struct
import zlib
from collections.abc import Iterator

import pytest

from ocpp_link.wire import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    FrameSplicer,
    apply_mask,
    close_payload,
    encode_frame,
    parse_close,
)

TOKEN = b"relay-token"


def frame(
    opcode: int, payload: bytes = b"", *, masked: bool, fin: bool = True, rsv: int = 0, length: int | None = None
) -> bytes:
    """A frame built by hand (a fixed mask key, any header), independent of `encode_frame`."""
    n = len(payload) if length is None else length
    b0 = (0x80 if fin else 0) | rsv | opcode
    m = 0x80 if masked else 0
    if n < 126:
        head = bytes((b0, m | n))
    elif n < 65536:
        head = bytes((b0, m | 126)) + struct.pack("!H", n)
    else:
        head = bytes((b0, m | 127)) + struct.pack("!Q", n)
    if masked:
        key = b"\x11\x22\x33\x44"
        return head + key + apply_mask(payload, key)
    return head + payload


class Recorder(FrameSplicer):
    """A splicer that records what it forwards and what it hands to the tap."""

    def __init__(self, masked: bool = True, max_message: int = 1 << 20, want: bool = True) -> None:
        super().__init__(self._write, masked=masked, max_message=max_message)
        self.want = want
        self.written = bytearray()
        self.writes: list[bytes] = []
        self.messages: list[tuple[int, bytes | None, int]] = []
        self.controls: list[tuple[int, bytes]] = []
        self.events: list[str] = []

    def _write(self, data: bytes) -> None:
        self.writes.append(data)
        self.written += data

    def _wants(self, opcode: int) -> bool:
        return self.want

    def _on_message(self, opcode: int, payload: bytes | None, size: int) -> None:
        self.messages.append((opcode, payload, size))

    def _on_control(self, opcode: int, payload: bytes) -> bool:
        self.controls.append((opcode, payload))
        return not (opcode == OP_PONG and payload == TOKEN)

    def _on_close_out(self) -> None:
        self.events.append("close_out")

    def _on_oversize(self) -> None:
        self.events.append("oversize")

    def _on_violation(self, why: str) -> None:
        self.events.append(f"violation: {why}")

    def _on_undecodable(self) -> None:
        self.events.append("undecodable")


def splits(data: bytes) -> Iterator[tuple[str, list[bytes]]]:
    """Ways of cutting a stream into reads: whole, byte by byte, every two-way cut, random cuts."""
    yield "whole", [data]
    yield "bytewise", [data[i : i + 1] for i in range(len(data))]
    step = max(1, len(data) // 97)  # every cut for small streams, a sample for big ones
    for i in range(1, len(data), step):
        yield f"cut@{i}", [data[:i], data[i:]]
    rng = random.Random(len(data))
    for seed in range(20):
        cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randint(1, 8))))
        yield f"random{seed}", [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


def feed(sp: FrameSplicer, chunks: list[bytes]) -> None:
    for c in chunks:
        sp.feed(c)


TEXT = b'[2,"1","Heartbeat",{}]'
MID = bytes(range(256)) * 1  # 256 bytes: 16-bit length
BIG = bytes(random.Random(1).randrange(256) for _ in range(70_000))  # 64-bit length

CASES = [
    # (name, masked, frames, expected messages (opcode, payload))
    ("7-bit masked text", True, [frame(OP_TEXT, TEXT, masked=True)], [(OP_TEXT, TEXT)]),
    ("7-bit unmasked text", False, [frame(OP_TEXT, TEXT, masked=False)], [(OP_TEXT, TEXT)]),
    ("empty", True, [frame(OP_TEXT, b"", masked=True)], [(OP_TEXT, b"")]),
    ("125 bytes", False, [frame(OP_BINARY, b"x" * 125, masked=False)], [(OP_BINARY, b"x" * 125)]),
    ("126 bytes: 16-bit", True, [frame(OP_BINARY, b"y" * 126, masked=True)], [(OP_BINARY, b"y" * 126)]),
    ("16-bit masked", True, [frame(OP_BINARY, MID, masked=True)], [(OP_BINARY, MID)]),
    ("65535: 16-bit max", False, [frame(OP_BINARY, b"z" * 65535, masked=False)], [(OP_BINARY, b"z" * 65535)]),
    ("64-bit masked", True, [frame(OP_BINARY, BIG, masked=True)], [(OP_BINARY, BIG)]),
    ("64-bit unmasked", False, [frame(OP_BINARY, BIG, masked=False)], [(OP_BINARY, BIG)]),
    (
        "fragmented with a ping inside",
        True,
        [
            frame(OP_TEXT, b'[2,"7","Status', masked=True, fin=False),
            frame(OP_CONT, b"Notification", masked=True, fin=False),
            frame(OP_PING, b"are you there", masked=True),
            frame(OP_CONT, MID, masked=True, fin=False),
            frame(OP_CONT, b'",{}]', masked=True),
        ],
        [(OP_TEXT, b'[2,"7","StatusNotification' + MID + b'",{}]')],
    ),
    (
        "several messages",
        False,
        [
            frame(OP_TEXT, TEXT, masked=False),
            frame(OP_PONG, b"someone else's", masked=False),
            frame(OP_BINARY, MID, masked=False),
            frame(OP_TEXT, b"a", masked=False, fin=False),
            frame(OP_CONT, b"", masked=False, fin=False),
            frame(OP_CONT, b"b", masked=False),
        ],
        [(OP_TEXT, TEXT), (OP_BINARY, MID), (OP_TEXT, b"ab")],
    ),
]


@pytest.mark.parametrize(("name", "masked", "frames", "expected"), CASES, ids=[c[0] for c in CASES])
def test_forwarded_byte_for_byte_and_messages_seen_however_split(
    name: str, masked: bool, frames: list[bytes], expected: list[tuple[int, bytes]]
) -> None:
    stream = b"".join(frames)
    for how, chunks in splits(stream):
        sp = Recorder(masked=masked)
        feed(sp, chunks)
        assert bytes(sp.written) == stream, how
        assert [(op, p) for op, p, _ in sp.messages] == expected, how
        assert [size for _, _, size in sp.messages] == [len(p) for _, p in expected], how
        assert sp.at_boundary() and not sp.events, how


def test_whole_reads_are_written_as_they_came() -> None:
    """The zero-copy path: a read holding only complete frames is written as the same object."""
    sp = Recorder(masked=True)
    chunk = frame(OP_TEXT, TEXT, masked=True) + frame(OP_TEXT, MID, masked=True)
    sp.feed(chunk)
    assert sp.writes[0] is chunk and len(sp.writes) == 1


def test_payload_bytes_go_out_at_once_headers_and_control_frames_only_whole() -> None:
    sp = Recorder(masked=False)
    big = frame(OP_BINARY, BIG, masked=False)
    sp.feed(big[:5])  # part of a 10-byte header: held
    assert sp.written == b""
    sp.feed(big[5:1000])  # header complete: header and payload so far go out
    assert sp.written == big[:1000]
    ping = frame(OP_PING, b"p" * 100, masked=False)
    sp.feed(big[1000:] + ping[:50])  # the rest of the frame, half a ping
    assert sp.written == big
    sp.feed(ping[50:])
    assert sp.written == big + ping


def test_not_wanted_messages_are_counted_not_copied() -> None:
    sp = Recorder(masked=True, want=False)
    sp.feed(frame(OP_TEXT, TEXT, masked=True))
    assert sp.messages == [(OP_TEXT, None, len(TEXT))]


@pytest.mark.parametrize("masked", [True, False])
def test_own_pong_is_cut_wherever_it_falls(masked: bool) -> None:
    a, b = frame(OP_TEXT, TEXT, masked=masked), frame(OP_BINARY, MID, masked=masked)
    ours, theirs = frame(OP_PONG, TOKEN, masked=masked), frame(OP_PONG, b"other", masked=masked)
    stream = a + ours + theirs + b
    for how, chunks in splits(stream):
        sp = Recorder(masked=masked)
        feed(sp, chunks)
        assert bytes(sp.written) == a + theirs + b, how
        assert (OP_PONG, TOKEN) in sp.controls and (OP_PONG, b"other") in sp.controls


def test_injected_frames_wait_for_the_end_of_the_current_frame() -> None:
    sp = Recorder(masked=False)
    first, second = frame(OP_BINARY, MID, masked=False), frame(OP_TEXT, TEXT, masked=False)
    ping = encode_frame(OP_PING, b"hi")
    sp.feed(first[:100])
    assert not sp.at_boundary()
    sp.inject(ping)
    assert sp.written == first[:100]  # not inside a frame
    sp.feed(first[100:] + second)
    assert sp.written == first + ping + second
    sp.inject(ping)  # between frames: at once
    assert sp.written.endswith(ping)


def test_injected_close_ends_the_output() -> None:
    sp = Recorder(masked=True)
    msg = frame(OP_TEXT, TEXT, masked=True)
    close = encode_frame(OP_CLOSE, close_payload(1001))
    sp.feed(msg[:3])  # half a header is held back: the output is still between frames
    sp.inject(close, close=True)
    assert sp.written == close
    sp = Recorder(masked=True)
    sp.feed(msg[:8])  # inside the payload: the close waits for the frame's end
    sp.inject(close, close=True)
    sp.feed(msg[8:] + msg)
    assert sp.written == msg + close and sp.discard and sp.events == ["close_out"]
    assert len(sp.messages) == 2  # still scanned: the relay still wants the peer's own close


def test_close_frame_passes_and_nothing_after_it() -> None:
    sp = Recorder(masked=True)
    close = frame(OP_CLOSE, close_payload(4001, "bye"), masked=True)
    stream = frame(OP_TEXT, TEXT, masked=True) + close + frame(OP_TEXT, TEXT, masked=True)
    sp.feed(stream)
    assert sp.written == stream[: len(stream) - len(frame(OP_TEXT, TEXT, masked=True))]
    assert sp.controls == [(OP_CLOSE, close_payload(4001, "bye"))] and sp.events == ["close_out"]
    assert parse_close(sp.controls[0][1]) == (4001, "bye") and parse_close(b"") == (1005, "")


@pytest.mark.parametrize(
    ("frames", "written_frames"),
    [
        ([frame(OP_TEXT, b"a" * 50, masked=True), frame(OP_TEXT, b"b" * 101, masked=True)], 1),
        ([frame(OP_TEXT, b"a" * 60, masked=True, fin=False), frame(OP_CONT, b"b" * 41, masked=True)], 1),
        ([frame(OP_BINARY, b"", masked=True, length=1 << 40)[:14]], 0),  # only the header is ever needed
    ],
)
def test_oversize_message_stops_before_its_frame(frames: list[bytes], written_frames: int) -> None:
    stream = b"".join(frames)
    for how, chunks in splits(stream):
        sp = Recorder(masked=True, max_message=100)
        feed(sp, chunks)
        assert bytes(sp.written) == b"".join(frames[:written_frames]), how
        assert sp.events == ["oversize"], how


FRAGMENT_OPEN = frame(OP_TEXT, b"x", masked=True, fin=False)


@pytest.mark.parametrize(
    ("masked", "prefix", "bad", "why"),
    [
        (True, b"", frame(OP_TEXT, TEXT, masked=False), "unmasked client frame"),
        (False, b"", frame(OP_TEXT, TEXT, masked=True), "masked frame from the server"),
        (True, b"", frame(3, b"", masked=True), "reserved opcode"),
        (True, b"", frame(OP_TEXT, TEXT, masked=True, rsv=0x20), "reserved opcode or RSV bit"),
        (True, b"", frame(OP_TEXT, TEXT, masked=True, rsv=0x40), "unexpected data frame"),  # no deflate
        (True, b"", frame(OP_PING, b"", masked=True, fin=False), "bad control frame"),
        (True, b"", frame(OP_PING, b"p" * 126, masked=True), "bad control frame"),
        (True, b"", frame(OP_CONT, b"x", masked=True), "unexpected continuation"),
        (True, FRAGMENT_OPEN, frame(OP_TEXT, b"y", masked=True), "unexpected data frame"),
        (False, b"", b"\x82\x7f" + struct.pack("!Q", 1 << 63), "64-bit length"),
    ],
)
def test_protocol_violations(masked: bool, prefix: bytes, bad: bytes, why: str) -> None:
    good = frame(OP_TEXT, TEXT, masked=masked)
    sp = Recorder(masked=masked)
    sp.feed(good + prefix + bad + good)
    assert len(sp.events) == 1 and sp.events[0].startswith("violation") and why in sp.events[0]
    assert sp.dead and bytes(sp.written) == good + prefix  # everything before the bad frame, nothing after
    seen = (len(sp.messages), len(sp.written))
    sp.feed(good)  # a dead input is not read any more
    assert (len(sp.messages), len(sp.written)) == seen


def deflate_messages(messages: list[bytes], wbits: int = 15, reset: bool = False) -> list[bytes]:
    out, comp = [], zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -wbits)
    for m in messages:
        if reset:
            comp = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -wbits)
        data = comp.compress(m) + comp.flush(zlib.Z_SYNC_FLUSH)
        assert data.endswith(b"\x00\x00\xff\xff")
        out.append(data[:-4])
    return out


@pytest.mark.parametrize(("wbits", "reset"), [(15, False), (10, False), (15, True)])
def test_deflate_messages_are_inflated_for_the_tap(wbits: int, reset: bool) -> None:
    plain = [TEXT, TEXT, MID, b'[3,"1",{}]' * 50]
    comp = deflate_messages(plain, wbits, reset)
    frames = [
        frame(OP_TEXT, comp[0], masked=True, rsv=0x40),
        frame(OP_TEXT, comp[1], masked=True, rsv=0x40),
        frame(OP_BINARY, comp[2][:3], masked=True, rsv=0x40, fin=False),  # RSV1 on the first frame only
        frame(OP_CONT, comp[2][3:], masked=True),
        frame(OP_TEXT, comp[3], masked=True, rsv=0x40),
    ]
    stream = b"".join(frames)
    for how, chunks in splits(stream):
        sp = Recorder(masked=True)
        sp.use_deflate(wbits, reset, track=True)
        feed(sp, chunks)
        assert bytes(sp.written) == stream, how
        assert [p for _, p, _ in sp.messages] == plain, how
        assert [s for _, _, s in sp.messages] == [len(c) for c in comp], how


def test_deflate_with_context_is_followed_even_when_not_wanted() -> None:
    comp = deflate_messages([TEXT, TEXT, TEXT])
    sp = Recorder(masked=False)
    sp.use_deflate(15, False, track=True)
    sp.want = False
    sp.feed(frame(OP_TEXT, comp[0], masked=False, rsv=0x40) + frame(OP_TEXT, comp[1], masked=False, rsv=0x40))
    sp.want = True
    sp.feed(frame(OP_TEXT, comp[2], masked=False, rsv=0x40))
    assert sp.messages[-1][1] == TEXT  # the third one needs the first two's context


def test_deflate_bomb_is_caught_after_inflating_and_bad_data_turns_the_tap_off() -> None:
    bomb = deflate_messages([b"0" * 100_000])[0]
    sp = Recorder(masked=True, max_message=1000)
    sp.use_deflate(15, False, track=True)
    sp.feed(frame(OP_TEXT, bomb, masked=True, rsv=0x40))  # small on the wire, forwarded
    assert sp.events == ["oversize"] and sp.messages == [(OP_TEXT, None, len(bomb))]

    sp = Recorder(masked=True)
    sp.use_deflate(15, False, track=True)
    sp.feed(frame(OP_TEXT, b"\xff\xfe not deflate", masked=True, rsv=0x40) + frame(OP_TEXT, TEXT, masked=True))
    assert sp.events == ["undecodable"] and sp.messages[-1] == (OP_TEXT, TEXT, len(TEXT))
    assert not sp.dead  # forwarding goes on


def test_encode_frame_round_trip() -> None:
    for n in (0, 125, 126, 65535, 65536):
        payload = bytes(n)
        for mask in (False, True):
            sp = Recorder(masked=mask)
            data = encode_frame(OP_BINARY, payload, mask=mask)
            sp.feed(data)
            assert sp.messages == [(OP_BINARY, payload, n)] and bytes(sp.written) == data
