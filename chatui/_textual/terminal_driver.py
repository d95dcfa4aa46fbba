"""The Linux and macOS terminal driver, with `InputPump`'s input thread."""

from __future__ import annotations

import os
import selectors
from codecs import getincrementaldecoder
from time import monotonic

from textual._xterm_parser import XTermParser
from textual.drivers.linux_driver import LinuxDriver

from chatui._textual.input import InputPump
from chatui.typeahead import as_typed, take_pending


class TerminalDriver(LinuxDriver):
    """Textual's Linux/macOS driver, with the input thread of `InputPump`.

    The same loop as `LinuxDriver.run_input_thread`, except that `select`
    waits until the parser's deadline rather than for a fixed 100 ms.
    """

    def run_input_thread(self) -> None:
        selector = selectors.SelectSelector()
        selector.register(self.fileno, selectors.EVENT_READ)
        pump = InputPump(self.process_message, parser=XTermParser(self._debug))
        decode = getincrementaldecoder("utf-8")().decode
        typed_ahead = take_pending()  # Bytes typed before chatui took the terminal.

        def read_ready(timeout: float, final: bool = False) -> None:
            nonlocal typed_ahead
            ready = selector.select(timeout)
            for index, (_key, mask) in enumerate(ready):
                if mask & selectors.EVENT_READ:
                    data = os.read(self.fileno, 4096)
                    read_at = monotonic()
                    if not data:
                        break  # stdin is a pipe that has ended.
                    if typed_ahead:  # The terminal made their Enters line feeds (Ctrl+J).
                        data = as_typed(data, typed_ahead)
                        typed_ahead = max(0, typed_ahead - len(data))
                    text = decode(data, final=final and index == len(ready) - 1)
                    if text:  # Empty when the read ended inside a UTF-8 character.
                        pump.feed(text, read_at)
            pump.tick()

        try:
            while not self.exit_event.is_set():
                read_ready(pump.timeout())
            selector.unregister(self.fileno)
            read_ready(0, final=True)
        finally:
            selector.close()
            pump.finish()
