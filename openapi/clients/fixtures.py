"""Writes the two Wasm modules the client smoke tests upload, encoded here byte by byte so the
tests need no WebAssembly toolchain:

- hello.wasm: writes "hello from a generated client\n" to stdout and exits 0;
- spin.wasm: loops forever (the smoke tests cancel it while it runs).

    python3 openapi/clients/fixtures.py OUTDIR
"""

import pathlib
import sys


def leb(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def vec(items: list[bytes]) -> bytes:
    return leb(len(items)) + b"".join(items)


def name(s: str) -> bytes:
    return leb(len(s)) + s.encode()


def section(sid: int, body: bytes) -> bytes:
    return bytes([sid]) + leb(len(body)) + body


def i32_const(n: int) -> bytes:
    # Signed LEB128; every constant here is small and non-negative (< 64).
    assert 0 <= n < 64
    return b"\x41" + bytes([n])


HEADER = b"\x00asm\x01\x00\x00\x00"
I32 = 0x7F


def hello(text: bytes) -> bytes:
    fd_write = bytes([0x60, 4, I32, I32, I32, I32, 1, I32])  # (i32 i32 i32 i32) -> i32
    start = bytes([0x60, 0, 0])  # () -> ()
    types = section(1, vec([fd_write, start]))
    imports = section(2, vec([name("wasi_snapshot_preview1") + name("fd_write") + b"\x00" + leb(0)]))
    funcs = section(3, vec([leb(1)]))
    memory = section(5, vec([b"\x00\x01"]))  # one page, no maximum
    exports = section(
        7, vec([name("memory") + b"\x02" + leb(0), name("_start") + b"\x00" + leb(1)])
    )
    # iovec at 0: {ptr 16, len}; bytes written land at 8; text at 16.
    body = (
        i32_const(0) + i32_const(16) + b"\x36\x02\x00"  # i32.store align=2 offset=0
        + i32_const(4) + b"\x41" + leb(len(text)) + b"\x36\x02\x00"
        + i32_const(1) + i32_const(0) + i32_const(1) + i32_const(8)
        + b"\x10" + leb(0)  # call fd_write
        + b"\x1a"  # drop
        + b"\x0b"
    )
    assert len(text) < 64
    code = section(10, vec([leb(len(b"\x00" + body)) + b"\x00" + body]))
    data = section(11, vec([b"\x00" + i32_const(16) + b"\x0b" + leb(len(text)) + text]))
    return HEADER + types + imports + funcs + memory + exports + code + data


def spin() -> bytes:
    types = section(1, vec([bytes([0x60, 0, 0])]))
    funcs = section(3, vec([leb(0)]))
    exports = section(7, vec([name("_start") + b"\x00" + leb(0)]))
    body = b"\x00" + b"\x03\x40" + b"\x0c\x00" + b"\x0b" + b"\x0b"  # loop; br 0; end; end
    code = section(10, vec([leb(len(body)) + body]))
    return HEADER + types + funcs + exports + code


def main() -> None:
    out = pathlib.Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    (out / "hello.wasm").write_bytes(hello(b"hello from a generated client\n"))
    (out / "spin.wasm").write_bytes(spin())


if __name__ == "__main__":
    main()
