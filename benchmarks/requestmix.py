#!/usr/bin/env python3
"""Sends a fixed mix of range requests over one keep-alive connection and checks every answer.

    requestmix.py URL SIZE ROUNDS [TOKEN] [vary]

Each round asks, in this order: 4 KiB at a fixed offset (the image's middle), 4 KiB at a
pseudo-random 4 KiB-aligned offset, 64 KiB at a pseudo-random offset. The offsets come from a
seeded generator, so every run (and every server) gets the same requests. Every answer must be
206 with exactly the bytes asked for, else the script exits 1: an instruction count of failed
requests means nothing. Prints the number of requests sent.

With `vary`, every request also carries a field whose value is the request's number, so no head
is the one before it but for its range: Depot then reads and decides every request anew instead
of answering it as the connection's last one repeated (`RepeatedHead`).
"""
import http.client
import random
import sys
import urllib.parse

url, size, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
token = sys.argv[4] if len(sys.argv) > 4 else ""
vary = len(sys.argv) > 5 and sys.argv[5] == "vary"
parts = urllib.parse.urlsplit(url)
connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=600)
generator = random.Random(17)
slots = (size - 65536) // 4096
sent = 0
for _ in range(rounds):
    for length, offset in ((4096, size // 2), (4096, generator.randrange(slots) * 4096), (65536, generator.randrange(slots) * 4096)):
        headers = {"Range": f"bytes={offset}-{offset + length - 1}"}
        if token:
            headers["X-Auth-Token"] = token
        if vary:
            headers["X-Mix-Request"] = str(sent)
        connection.request("GET", parts.path, headers=headers)
        response = connection.getresponse()
        body = response.read()
        if response.status != 206 or len(body) != length:
            sys.exit(f"request {sent + 1}: {response.status} with {len(body)} bytes, expected 206 with {length}")
        sent += 1
print(sent)
