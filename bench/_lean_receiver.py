"""A lean HTTP/1.1 webhook receiver for bench/webhooks.py: asyncio, keep-alive.

The receiver in tests/ (http.server, a thread per connection) costs a few
hundred µs of CPU per request, on the same two cores as the dispatcher it is
meant to measure; a real receiver runs elsewhere. This one reads the request
head and body and answers ``200 ok`` (``/slow`` after 5 s), counting requests
per path, so it takes as little of the machine as a receiver can.

    python bench/_lean_receiver.py      # prints its port, serves until killed
"""

from __future__ import annotations

import asyncio
import sys

ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"
SLOW_SECONDS = 5.0


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            request_line, _, header_block = head.partition(b"\r\n")
            length = 0
            for line in header_block.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if length:
                await reader.readexactly(length)
            if b" /slow" in request_line:
                await asyncio.sleep(SLOW_SECONDS)
            writer.write(ANSWER)
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
        pass
    finally:
        writer.close()


async def main() -> None:
    server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=1024)
    port = server.sockets[0].getsockname()[1]
    print(port, flush=True)
    sys.stdout.flush()
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
