#!/usr/bin/env python3
"""An agent of fixed capacity for loadtest/overload.sh: at most CAPACITY
queries at once, each taking WORK seconds; the rest wait their turn, as
they would at a real model server. Answers sessiongate's `http` agent
protocol (`{"output": ...}`). Loopback only; stops with its parent.
Usage: slow_agent.py PORT [CAPACITY=32] [WORK=0.02]
"""

import asyncio
import json
import sys

PORT = int(sys.argv[1])
CAPACITY = int(sys.argv[2]) if len(sys.argv) > 2 else 32
WORK = float(sys.argv[3]) if len(sys.argv) > 3 else 0.02


async def serve(reader, writer, slots):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip())
            await reader.readexactly(length)
            async with slots:
                await asyncio.sleep(WORK)
            body = json.dumps({"output": "done"}).encode()
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main():
    slots = asyncio.Semaphore(CAPACITY)
    server = await asyncio.start_server(lambda r, w: serve(r, w, slots), "127.0.0.1", PORT, backlog=4096)
    async with server:
        await server.serve_forever()


asyncio.run(main())
