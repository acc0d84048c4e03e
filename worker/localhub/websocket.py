"""AMQP over WebSocket (the SDK's ``TransportType.AmqpOverWebsocket``) at the byte level, sans-IO.

The SDK opens ``ws://host:port/$servicebus/websocket`` with the subprotocol ``AMQPWSB10`` and
carries the AMQP byte stream (protocol header, SASL, frames) in binary messages cut anywhere: the
messages' payloads, joined, are the stream. The hub serves it on its AMQP port and tells the two
apart by a connection's first bytes (:func:`opens_handshake`). wsproto does the HTTP handshake and
the framing; :class:`AmqpWebSocket` turns bytes from the peer into AMQP bytes for the connection and
bytes to answer with, and wraps the connection's bytes into messages. The caller owns the socket.
"""

from __future__ import annotations

from dataclasses import dataclass
from http import HTTPStatus
from typing import Final

from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.frame_protocol import CloseReason
from wsproto.utilities import RemoteProtocolError

#: The path the SDK appends to the endpoint, the only one the hub serves.
PATH: Final = "/$servicebus/websocket"
#: The WebSocket subprotocol of AMQP 1.0 (OASIS AMQP WebSocket Binding).
SUBPROTOCOL: Final = "AMQPWSB10"
_GET: Final = b"GET "
#: The states in which bytes from the peer still mean something.
_LISTENING: Final = frozenset((ConnectionState.CONNECTING, ConnectionState.OPEN, ConnectionState.LOCAL_CLOSING))


def opens_handshake(start: bytes) -> bool | None:
    """Whether a connection that began with ``start`` is a WebSocket handshake (an HTTP ``GET``)
    rather than AMQP (``AMQP`` and a version); None while ``start`` is too short to tell."""
    if start.startswith(_GET):
        return True
    if _GET.startswith(start):
        return None
    return False


@dataclass(frozen=True, slots=True)
class Received:
    """What some bytes from the peer came to."""

    #: Bytes of the AMQP stream, for the connection.
    amqp: bytes = b""
    #: Bytes to send the peer now: the handshake's answer, pongs, a close frame.
    reply: bytes = b""
    #: The WebSocket is over (refused, closed by either side, or broken): close the socket after ``reply``.
    finished: bool = False
    #: Why the hub refused or closed it, when it did.
    problem: str | None = None


class AmqpWebSocket:
    """The server side of one AMQP WebSocket: handshake, then binary messages both ways.

    Only ``PATH`` with the ``AMQPWSB10`` subprotocol is accepted: another path is answered 404, a
    handshake without the subprotocol 400, each with the reason as the body. Pings are answered;
    a text message closes the WebSocket (1003), as AMQP travels in binary messages only.
    """

    def __init__(self) -> None:
        self._ws = WSConnection(ConnectionType.SERVER)

    @property
    def open(self) -> bool:
        """The handshake is done and neither side has begun to close."""
        return self._ws.state is ConnectionState.OPEN

    def receive(self, data: bytes) -> Received:
        """Take bytes from the peer."""
        ws = self._ws
        if ws.state not in _LISTENING:
            return Received(finished=True)
        try:
            ws.receive_data(data)
        except RemoteProtocolError as exc:  # not a WebSocket handshake wsproto accepts
            hint = exc.event_hint
            status = hint.status_code if isinstance(hint, RejectConnection) else 400
            headers = list(hint.headers) if isinstance(hint, RejectConnection) else []
            return self._refuse(status, str(exc), headers)
        amqp = bytearray()
        reply = bytearray()
        for event in ws.events():  # one at a time: each may change the state the next is answered in
            if isinstance(event, Request):
                refusal = self._refusal(event)
                if refusal is not None:
                    return self._refuse(*refusal)
                reply += ws.send(AcceptConnection(subprotocol=SUBPROTOCOL))
            elif isinstance(event, BytesMessage):
                amqp += event.data
            elif isinstance(event, Ping):
                reply += ws.send(event.response())
            elif isinstance(event, TextMessage):
                reason = "a text message: AMQP travels in binary messages"
                reply += ws.send(CloseConnection(code=CloseReason.UNSUPPORTED_DATA, reason=reason))
                return Received(bytes(amqp), bytes(reply), finished=True, problem=reason)
            elif isinstance(event, CloseConnection):
                # The peer's close frame has moved the state on; still open means wsproto could not read a frame.
                broken = ws.state is ConnectionState.OPEN
                if ws.state in (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING):
                    reply += ws.send(event.response())
                problem = f"{event.reason} ({event.code})" if broken else None
                return Received(bytes(amqp), bytes(reply), finished=True, problem=problem)
        return Received(bytes(amqp), bytes(reply))

    def send(self, amqp: bytes) -> bytes:
        """``amqp`` as one binary message; nothing once the WebSocket is closing (the peer would not read it)."""
        if not self.open:
            return b""
        return self._ws.send(BytesMessage(data=amqp))

    def close(self) -> bytes:
        """A normal close frame, when the WebSocket is open (the connection ends from the hub's side)."""
        if not self.open:
            return b""
        return self._ws.send(CloseConnection(code=CloseReason.NORMAL_CLOSURE))

    @staticmethod
    def _refusal(request: Request) -> tuple[int, str] | None:
        path = request.target.partition("?")[0]
        if path != PATH:
            return 404, f"no WebSocket endpoint at {path}: AMQP is served at {PATH}"
        if SUBPROTOCOL not in request.subprotocols:
            offered = ", ".join(request.subprotocols) or "none"
            return 400, f"the {SUBPROTOCOL} subprotocol is required (offered: {offered})"
        return None

    def _refuse(self, status: int, problem: str, headers: list[tuple[bytes, bytes]] | None = None) -> Received:
        """Answer the handshake with ``status`` and ``problem`` as a plain-text body."""
        body = problem.encode() + b"\n"
        head = [
            *(headers or []),
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", b"%d" % len(body)),
        ]
        reply = self._ws.send(RejectConnection(status_code=status, headers=head, has_body=True))
        # wsproto leaves the status line's reason phrase empty; clients print it, so give the standard one.
        line, crlf, rest = reply.partition(b"\r\n")
        reply = line.rstrip() + b" " + HTTPStatus(status).phrase.encode() + crlf + rest
        reply += self._ws.send(RejectData(data=body, body_finished=True))
        return Received(reply=reply, finished=True, problem=problem)
