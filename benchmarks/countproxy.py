#!/usr/bin/env python3
"""A TCP proxy on loopback that counts the bytes the upstream sends.

    countproxy.py LISTEN_PORT UPSTREAM_PORT COUNT_FILE

Every second, and at SIGTERM, writes the total of upstream-to-client bytes to COUNT_FILE;
SIGUSR1 resets the count. Used by benchmarks/coldmiss to measure how many image bytes each
cache fetched from Glance.
"""
import asyncio
import signal
import sys

listen_port, upstream_port, count_file = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
total = 0


def write_count():
    with open(count_file, "w") as f:
        f.write(f"{total}\n")


async def pipe(reader, writer, count):
    global total
    try:
        while True:
            data = await reader.read(1 << 16)
            if not data:
                break
            if count:
                total += len(data)
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        try:
            writer.close()
        except Exception:
            pass


async def handle(client_reader, client_writer):
    try:
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", upstream_port)
    except OSError:
        client_writer.close()
        return
    try:
        await asyncio.gather(pipe(client_reader, upstream_writer, False), pipe(upstream_reader, client_writer, True))
    except asyncio.CancelledError:
        pass


async def tick():
    while True:
        write_count()
        await asyncio.sleep(1)


def reset(*_):
    global total
    total = 0
    write_count()


async def main():
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGUSR1, reset)
    stop = loop.create_future()
    loop.add_signal_handler(signal.SIGTERM, stop.set_result, None)
    server = await asyncio.start_server(handle, "127.0.0.1", listen_port)
    ticker = asyncio.create_task(tick())
    async with server:
        await stop
    ticker.cancel()
    write_count()


asyncio.run(main())
