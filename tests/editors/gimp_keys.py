"""Press keys in an X server through its XTEST extension, speaking the X11 protocol directly.

The editor chroot has no xdotool and no libXtst, and keys pressed through XTEST reach GIMP like
real ones. This covers only what the GUI tests need: connecting without authentication (run Xvfb
with -ac), finding a toplevel window by title, focusing it and pressing key combinations. Without
a window manager, toplevel windows are children of the root window and keep their titles.
"""

from __future__ import annotations

import os
import socket
import struct

KEYSYMS = {
    "Control_L": 0xFFE3,
    "Shift_L": 0xFFE1,
    "Return": 0xFF0D,
    "Escape": 0xFF1B,
    "Alt_L": 0xFFE9,
    "i": 0x69,
    "o": 0x6F,
    "z": 0x7A,
    "y": 0x79,
}
OPCODE_QUERY_TREE = 15
OPCODE_INTERN_ATOM = 16
OPCODE_GET_PROPERTY = 20
OPCODE_SET_INPUT_FOCUS = 42
OPCODE_GET_INPUT_FOCUS = 43
OPCODE_QUERY_EXTENSION = 98
REVERT_TO_PARENT = 2
ATOM_WM_NAME = 39  # predefined atom
OPCODE_GET_KEYBOARD_MAPPING = 101
XTEST_FAKE_INPUT = 2
KEY_PRESS, KEY_RELEASE = 2, 3


class XError(RuntimeError):
    """The X server refused the connection or a request."""


def _pad(length: int) -> int:
    return (4 - length % 4) % 4


class XTestConnection:
    """One connection to an X server, for focusing windows and pressing keys."""

    def __init__(self, display: str | None = None) -> None:
        display = display or os.environ.get("DISPLAY", "")
        number = display.split(":")[-1].split(".")[0]
        if not number.isdigit():
            raise XError(f"invalid DISPLAY {display!r}: expected a local display such as ':99'")
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.socket.connect(f"/tmp/.X11-unix/X{number}")
        self._setup()
        self.keycodes = self._keyboard_mapping()
        self.xtest_opcode = self._extension_opcode(b"XTEST")

    def close(self) -> None:
        self.socket.close()

    def _receive(self, size: int) -> bytes:
        chunks = []
        while size:
            chunk = self.socket.recv(size)
            if not chunk:
                raise XError("the X server closed the connection")
            chunks.append(chunk)
            size -= len(chunk)
        return b"".join(chunks)

    def _setup(self) -> None:
        # Byte order 'l' (little-endian), protocol 11.0, no authorization.
        self.socket.sendall(struct.pack("<BxHHHHxx", ord("l"), 11, 0, 0, 0))
        status, _, _, _, extra_words = struct.unpack("<BBHHH", self._receive(8))
        extra = self._receive(4 * extra_words)
        if status != 1:
            reason = extra.decode("latin-1", "replace").strip("\0 ")
            raise XError(f"the X server refused the connection: {reason} (start Xvfb with -ac)")
        (vendor_length,) = struct.unpack_from("<H", extra, 16)
        screen_count, format_count = extra[20], extra[21]
        self.min_keycode, self.max_keycode = extra[26], extra[27]
        if screen_count < 1:
            raise XError("the X server has no screen")
        screen_offset = 32 + vendor_length + _pad(vendor_length) + 8 * format_count
        (self.root,) = struct.unpack_from("<I", extra, screen_offset)

    def _reply(self) -> bytes:
        """Read the next reply, skipping events and raising XError on an error."""
        while True:
            head = self._receive(32)
            if head[0] == 0:
                raise XError(f"X error code {head[1]} for request opcode {head[10]}")
            if head[0] == 1:
                (extra_words,) = struct.unpack_from("<I", head, 4)
                return head + self._receive(4 * extra_words)

    def _extension_opcode(self, name: bytes) -> int:
        length = 2 + (len(name) + _pad(len(name))) // 4
        request = (
            struct.pack("<BxHHxx", OPCODE_QUERY_EXTENSION, length, len(name)) + name + b"\0" * _pad(len(name))
        )
        self.socket.sendall(request)
        reply = self._reply()
        if not reply[8]:
            raise XError(f"the X server lacks the {name.decode()} extension")
        return reply[9]

    def _keyboard_mapping(self) -> dict[int, int]:
        count = self.max_keycode - self.min_keycode + 1
        self.socket.sendall(struct.pack("<BxHBBxx", OPCODE_GET_KEYBOARD_MAPPING, 2, self.min_keycode, count))
        reply = self._reply()
        per_keycode = reply[1]
        keysyms = struct.unpack_from(f"<{count * per_keycode}I", reply, 32)
        keycodes: dict[int, int] = {}
        for index, keysym in enumerate(keysyms):
            keycodes.setdefault(keysym, self.min_keycode + index // per_keycode)
        return keycodes

    def _fake_input(self, event_type: int, keycode: int) -> None:
        # FakeInput: type, detail, time (0 = now), root, pointer x and y (unused for keys), device.
        request = struct.pack(
            "<BBHBBxxIIxxxxxxxxhhxxxxxxxB",
            self.xtest_opcode,
            XTEST_FAKE_INPUT,
            9,
            event_type,
            keycode,
            0,
            self.root,
            0,
            0,
            0,
        )
        self.socket.sendall(request)

    def sync(self) -> None:
        """Wait until the server has processed every request sent so far."""
        self.socket.sendall(struct.pack("<BxH", OPCODE_GET_INPUT_FOCUS, 1))
        self._reply()

    def _atom(self, name: bytes) -> int:
        length = 2 + (len(name) + _pad(len(name))) // 4
        request = (
            struct.pack("<BBHHxx", OPCODE_INTERN_ATOM, 0, length, len(name)) + name + b"\0" * _pad(len(name))
        )
        self.socket.sendall(request)
        (atom,) = struct.unpack_from("<I", self._reply(), 8)
        return atom

    def _children(self, window: int) -> list[int]:
        self.socket.sendall(struct.pack("<BxHI", OPCODE_QUERY_TREE, 2, window))
        reply = self._reply()
        (count,) = struct.unpack_from("<H", reply, 16)
        return list(struct.unpack_from(f"<{count}I", reply, 32))

    def _text_property(self, window: int, atom: int) -> str:
        self.socket.sendall(struct.pack("<BBHIIIII", OPCODE_GET_PROPERTY, 0, 6, window, atom, 0, 0, 4096))
        reply = self._reply()
        value_format = reply[1]
        (length,) = struct.unpack_from("<I", reply, 16)
        if value_format != 8:
            return ""
        return reply[32 : 32 + length].decode("utf-8", "replace")

    def window_titles(self) -> dict[int, str]:
        """Return {window: title} for the toplevel windows that have a title."""
        utf8_name = self._atom(b"_NET_WM_NAME")
        titles = {}
        for window in self._children(self.root):
            title = self._text_property(window, utf8_name) or self._text_property(window, ATOM_WM_NAME)
            if title:
                titles[window] = title
        return titles

    def find_window(self, title_part: str) -> int | None:
        """Return a toplevel window whose title contains `title_part`, or None."""
        for window, title in self.window_titles().items():
            if title_part in title:
                return window
        return None

    def focus(self, window: int) -> None:
        """Give a window the keyboard focus, as a window manager would on a click."""
        self.socket.sendall(struct.pack("<BBHII", OPCODE_SET_INPUT_FOCUS, REVERT_TO_PARENT, 3, window, 0))
        self.sync()

    def press(self, *names: str) -> None:
        """Press the keys in order and release them in reverse order, like a shortcut."""
        keycodes = []
        for name in names:
            keysym = KEYSYMS[name]
            if keysym not in self.keycodes:
                raise XError(f"no keycode for {name} in the X server's keyboard map")
            keycodes.append(self.keycodes[keysym])
        for keycode in keycodes:
            self._fake_input(KEY_PRESS, keycode)
        for keycode in reversed(keycodes):
            self._fake_input(KEY_RELEASE, keycode)
        self.sync()
