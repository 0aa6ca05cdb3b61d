#!/usr/bin/env python3
"""Closes a connection to a real server N times in one way, byte for byte
as portcall's service probes do (or as the alternatives would), so that
service_close.sh can read what the server counts and logs for each way.

usage: service_close.py PROTOCOL WAY HOST PORT N
  mysql fin      read the greeting, then FIN (portcall's probe)
  mysql rst      read the greeting, then a reset (SO_LINGER 0)
  amqp  fin      send the 0-9-1 header, read Connection.Start, then FIN (portcall's probe)
  amqp  rst      the same, then a reset
  amqp  close    the same, then Connection.Close (channel 0, reply 200), wait for the broker to close
Only loopback or lab addresses: service_close.sh runs it inside its own namespace.
"""
import socket
import struct
import sys
import time

HEADER = b"AMQP\x00\x00\x09\x01"


def read_some(s, want, limit=65536):
    data = b""
    s.settimeout(2.0)
    while len(data) < limit and not want(data):
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def mysql_complete(b):
    return len(b) >= 4 and len(b) >= 4 + (b[0] | b[1] << 8 | b[2] << 16)


def amqp_frame_complete(b):
    return len(b) >= 7 and len(b) >= 8 + struct.unpack(">I", b[3:7])[0]


def connection_close():
    # class 10 method 50: reply-code 200, reply-text "", class 0, method 0
    payload = struct.pack(">HHHBHH", 10, 50, 200, 0, 0, 0)
    return struct.pack(">BHI", 1, 0, len(payload)) + payload + b"\xce"


def once(protocol, way, host, port):
    s = socket.create_connection((host, port), timeout=2.0)
    if protocol == "mysql":
        got = read_some(s, mysql_complete)
        assert got[4] in (9, 10, 0xFF), got[:8]
    else:
        s.sendall(HEADER)
        got = read_some(s, amqp_frame_complete)
        assert got[:1] == b"\x01", got[:16]
    if way == "rst":
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
        return
    if way == "close":
        s.sendall(connection_close())
    s.shutdown(socket.SHUT_WR)
    try:
        read_some(s, lambda b: False, 65536)
    except OSError:
        pass
    s.close()


def main():
    protocol, way, host, port, n = sys.argv[1:6]
    started = time.monotonic()
    for _ in range(int(n)):
        once(protocol, way, host, int(port))
    print(f"{protocol} {way}: {n} connections in {time.monotonic() - started:.1f} s")


if __name__ == "__main__":
    main()
