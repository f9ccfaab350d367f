#!/usr/bin/env python3
"""Python `cryptography` Fernet streaming, the seed's technology: a file sent in
1 MiB chunks, each one Fernet token (base64 text, as Fernet.encrypt returns it) in a
4-byte length-prefixed frame, between two processes over 127.0.0.1.

    BENCH_FERNET_KEY=... python3 bench/python_fernet_stream.py recv OUT_FILE
        # prints "PORT <n>", then "BYTES <n>" when done
    BENCH_FERNET_KEY=... python3 bench/python_fernet_stream.py send PORT IN_FILE [CHUNK]

The key comes from the environment so it never appears in a process listing.
"""
import os
import socket
import struct
import sys

from cryptography.fernet import Fernet


def recv_exact(conn: socket.socket, n: int) -> bytes:
    parts = []
    while n:
        part = conn.recv(min(n, 4 << 20))
        if not part:
            raise EOFError("connection closed mid-frame")
        parts.append(part)
        n -= len(part)
    return b"".join(parts)


def receive(fernet: Fernet, out_path: str) -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    print(f"PORT {listener.getsockname()[1]}", flush=True)
    conn, _ = listener.accept()
    listener.close()
    total = 0
    with open(out_path, "wb") as out:
        while True:
            header = conn.recv(4, socket.MSG_WAITALL)
            if not header:
                break
            (length,) = struct.unpack(">I", header)
            if length == 0:
                break
            chunk = fernet.decrypt(recv_exact(conn, length))
            out.write(chunk)
            total += len(chunk)
    conn.close()
    print(f"BYTES {total}", flush=True)


def send(fernet: Fernet, port: int, in_path: str, chunk_size: int) -> None:
    conn = socket.create_connection(("127.0.0.1", port))
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    with open(in_path, "rb") as source:
        while True:
            chunk = source.read(chunk_size)
            if not chunk:
                break
            token = fernet.encrypt(chunk)
            conn.sendall(struct.pack(">I", len(token)) + token)
    conn.sendall(struct.pack(">I", 0))
    conn.close()


def main() -> int:
    fernet = Fernet(os.environ["BENCH_FERNET_KEY"].encode())
    if len(sys.argv) == 3 and sys.argv[1] == "recv":
        receive(fernet, sys.argv[2])
    elif len(sys.argv) in (4, 5) and sys.argv[1] == "send":
        chunk = int(sys.argv[4]) if len(sys.argv) == 5 else 1 << 20
        send(fernet, int(sys.argv[2]), sys.argv[3], chunk)
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
