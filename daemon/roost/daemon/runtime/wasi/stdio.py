"""stdin (bytes + read position, saved with the execution) and stdout/stderr (handed to the
`output(fd, data)` callback, which the worker turns into durable logs)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StdinState:
    """Saved form of `Stdin`."""
    data: bytes = b''
    position: int = 0


class Stdin:
    """The guest's stdin: a fixed byte string, EOF after its end."""

    def __init__(self, state: StdinState) -> None:
        self.data = state.data
        self.position = state.position

    def read(self, n: int) -> bytes:
        chunk = self.data[self.position:self.position + n]
        self.position += len(chunk)
        return chunk

    def remaining(self) -> int:
        return len(self.data) - self.position

    def save(self) -> StdinState:
        return StdinState(self.data, self.position)

    @classmethod
    def restore(cls, state: StdinState) -> Stdin:
        return cls(state)
