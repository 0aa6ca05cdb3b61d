#!/usr/bin/env python3
"""A userspace stand-in for `tc netem delay D J` on kernels built without
sch_netem: IPv4 packets redirected (tc mirred) from an interface's ingress
to the TUN device this script creates are held for D +/- J ms (uniform, like
netem's default jitter) and then handed back to the kernel through that
TUN device, which delivers them locally. Lab use only; bounded by
--lifetime and by --max-queue packets (beyond it packets are dropped and
counted, never queued without bound).

  delay_line.py --dev dly0 --delay-ms 300 --jitter-ms 100 --lifetime 120

Prints `ready` once the device exists; the caller brings it up and adds the
redirect (see integration's delay helper).
"""
import argparse, fcntl, heapq, os, random, select, struct, sys, time

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dev", default="dly0")
    ap.add_argument("--delay-ms", type=float, required=True)
    ap.add_argument("--jitter-ms", type=float, default=0.0)
    ap.add_argument("--lifetime", type=float, default=120.0)
    ap.add_argument("--max-queue", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=14)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    fd = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", a.dev.encode(), IFF_TUN | IFF_NO_PI))
    os.set_blocking(fd, False)
    print("ready", flush=True)
    end = time.monotonic() + a.lifetime
    queue, seq, dropped = [], 0, 0
    while True:
        now = time.monotonic()
        if now >= end:
            break
        while queue and queue[0][0] <= now:
            _, _, pkt = heapq.heappop(queue)
            try:
                os.write(fd, pkt)
            except OSError:
                dropped += 1
        wait = min(end - now, (queue[0][0] - now) if queue else 1.0)
        r, _, _ = select.select([fd], [], [], max(wait, 0))
        if not r:
            continue
        while True:
            try:
                pkt = os.read(fd, 65536)
            except BlockingIOError:
                break
            if len(queue) >= a.max_queue:
                dropped += 1
                continue
            d = a.delay_ms + rng.uniform(-a.jitter_ms, a.jitter_ms)
            seq += 1
            heapq.heappush(queue, (time.monotonic() + max(d, 0) / 1000.0, seq, pkt))
    print(f"done: {seq} packets delayed, {dropped} dropped", file=sys.stderr, flush=True)

if __name__ == "__main__":
    main()
