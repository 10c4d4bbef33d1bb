"""A fake asyncio transport for driving a protocol (server.worker.HttpProtocol) in process."""

from __future__ import annotations

from typing import Any


class FakeTransport:
    """What asyncio gives a protocol, recording what is written."""

    def __init__(self) -> None:
        self.written = bytearray()
        self.closed = False
        self.eof_written = False

    def write(self, data: bytes) -> None:
        assert not self.closed, "written after close"
        assert not self.eof_written, "written after the end of output"
        self.written += data

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 5000), "sockname": ("127.0.0.1", 8000)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof_written = True
