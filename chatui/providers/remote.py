"""What the OpenAI and Anthropic providers share: retries, error texts, closing for real.

**Retry policy.** The SDKs' own retries are off (`max_retries=0`): the
Anthropic SDK honours any `retry-after`, even an hour, and neither shows the
wait. chatui retries a request at most `RETRIES` times, and only before its
stream has started: on a connection that failed (not TLS, DNS or a timeout),
and on HTTP 408, 409, 429, 500, 502, 503, 504 and 529. It waits what the server's
`retry-after` asks, or 1 s then 2 s, and never more than `MAX_RETRY_WAIT`
seconds; a server asking for longer gets no retry, and its error is shown.
Each wait is a `RetryWait` event (the status line reads "retrying in N s
(429)"), and Esc ends it at once.

**Reading what servers send.** Compatible servers and gateways send fields
missing, null or of another type than the API's: `field`, `count`, `items`
and `json_text` read them so that what carries nothing usable is skipped.
An error inside the stream is an `ErrorEvent`, and every error text is a
sentence, never a Python exception (`unreadable_text` is the last resort).

**Continuing a reply** (`ModelRequest.continuing`: the last message is the
model's own reply, cut short). A provider either *prefills*: sends the partial
as the final assistant message, which the API or server continues; or sends
an *instruction*: the partial, then a short user message asking the model to
go on exactly where it stopped (`continue_instruction`). Either way the
partial goes without its trailing whitespace (Anthropic refuses a prefill that
ends in whitespace, templates trim it, and a lone trailing space is a token a
model rarely saw), and the stream carries only the new text. The `Seam` keeps
the stored text (partial, then continuation) whole, and never takes back what
it let through:

- Whitespace: the continuation's first characters, as far as they repeat the
  whitespace the partial ends with, are dropped. "Roses are " then " red"
  reads "Roses are red"; "One.\n\n" then "\n\nTwo" reads "One.\n\nTwo";
  "One.\n" then "\n\nTwo" reads "One.\n\nTwo".
- By instruction, the model begins a new message, and such a message rarely
  starts with a space: "Roses are" then "red." would read "Roses arered.", and
  a word cut in the middle ("bre") is as often started again ("bread") as
  finished ("ad"). So the instruction names the partial's last words
  (`repeat_tail`: its last line's last five words, at most 40 characters) and
  asks the model to begin by writing them again. The continuation's start is
  held back while it may still be that repeat (past its leading whitespace,
  it is the beginning of one of the partial's last line's endings that start
  a word); then the longest such ending it begins with is dropped: "Roses
  are" then " Roses are red." reads "Roses are red.", and "Fresh bre" then
  "bread" reads "Fresh bread".
- A continuation that repeats nothing gets one space after a partial that
  ends in a letter or digit, when it starts with one ("Roses are" then "red."
  reads "Roses are red."), except where the cut is evident or a script puts no
  space between words: a number cut in two ("19" then "84"), and characters
  of scripts written without spaces (Chinese, Japanese). A word cut in the
  middle is not evident from its letters ("are" or "bre"): the repeat is what
  joins it. (A model that repeats nothing but begins with the partial's last
  letters, "are" then "arena", is read as one that repeats them.)
- Text held back while it may be the repeat is, past its leading whitespace,
  only the partial's own words again. So when the text ends before it can be
  told apart (a tool call, the reply's end), those words are dropped and the
  whitespace alone goes on; a stop or an error drops all of it. Nothing new
  is lost, and the store and the screen agree: neither ever had it.

A server may refuse a prefill all the same (Claude 4.6 and later models take
none; a gateway in front of vLLM may refuse its fields): with `continue_with =
"auto"`, a refusal that names the prefill (`PREFILL_REFUSALS`, a 400 before
anything of the reply came) is sent again at once by instruction, and that
provider asks by instruction from then on (`prefill_refused`).

**Closing for real.** `create_then_close` runs the SDK's `create()` in a task
of its own, so a stop that lands just as `create()` returns cannot lose the
stream it returned: whatever it returned is closed on every way out, shielded
from the cancellation, and the server sees the disconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import email.utils
import json
import re
import socket
import time
import unicodedata
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import aclosing, asynccontextmanager
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

from chatui import redact
from chatui.history import ChatMessage
from chatui.providers.base import (
    ModelRequest,
    ProviderError,
    ProviderLifecycle,
    RetryWait,
    StreamEnd,
    StreamEvent,
    TextDelta,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
)
from chatui.providers.overflow import as_overflow

RETRIES = 2
MAX_RETRY_WAIT = 20.0
DETAIL_LIMIT = 300  # Characters of a server's own words shown with an error.
RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504, 529})
CONNECT_TIMEOUT = 10.0
PROBE_TIMEOUT = 3.0  # Seconds the empty conversation waits to learn if `base_url` answers.
PREFILL_REFUSALS = (
    "prefill",  # Anthropic's "does not support assistant message prefill", llama.cpp's own.
    "final assistant",  # Anthropic's "final assistant content cannot end with ...".
    "continue_final_message",  # vLLM's fields, refused by what does not know them.
    "add_generation_prompt",
    "chat_template_kwargs",
)
"""Words of a refusal (400) of a prefilled request that say it is the prefill refused."""
CONTINUE_INSTRUCTION = (
    "[Your reply above was cut off. Continue it exactly where it stopped, even in the "
    "middle of a word or a sentence. Begin by writing its last words again, exactly as "
    'they are: "{tail}", then go straight on with what comes next, without saying that '
    "you continue.]"
)
"""The request to go on (`continue_instruction`); `{tail}` is the partial's last words."""
TAIL_WORDS = 5  # The most words the model is asked to say again...
TAIL_CHARS = 40  # ...and the most characters.
REPEAT_WINDOW = 200  # How far back in the partial's last line a repeat may begin.


def continue_instruction(tail: str) -> str:
    """The request to go on from a partial that ends with `tail`, beginning with it again."""
    return CONTINUE_INSTRUCTION.format(tail=tail)


def repeat_tail(text: str) -> str:
    """The last words of `text` (no trailing whitespace) the model is asked to say again.

    Its last line's last `TAIL_WORDS` words, as far as they fit in
    `TAIL_CHARS`; a last word longer than that (a URL, say) is cut to its end.
    """
    line = text[text.rfind("\n") + 1 :]
    words = [match.start() for match in re.finditer(r"\S+", line[-REPEAT_WINDOW:])]
    offset = max(0, len(line) - REPEAT_WINDOW)
    start = next(
        (offset + w for w in words[-TAIL_WORDS:] if len(line) - offset - w <= TAIL_CHARS), None
    )
    return line[start:] if start is not None else line[-TAIL_CHARS:]


def continued(messages: list[ChatMessage], *, prefill: bool) -> tuple[list[ChatMessage], Seam]:
    """The messages that make the model go on from the partial (the last message), and the seam.

    The partial is sent without its trailing whitespace (see the module
    docstring). A partial with nothing but whitespace leaves nothing to go on
    from: the model is asked for a reply as usual (and so is it when the last
    message is not the model's).
    """
    if not messages or messages[-1].role != "assistant":
        return messages, Seam()
    *before, last = messages
    text = last.content.rstrip()
    whitespace = last.content[len(text) :]
    if not text:
        return before, Seam(whitespace)
    partial = ChatMessage("assistant", text)
    if prefill:
        return [*before, partial], Seam(whitespace)
    tail = repeat_tail(text)
    asked = ChatMessage("user", continue_instruction(tail))
    return [*before, partial, asked], Seam(whitespace, partial=text, tail=tail)


class PrefillRefused(ProviderError):
    """The server refused a prefill before anything of the reply came: ask by instruction."""


def _unspaced(char: str) -> bool:
    """A character of a script written without spaces between words (Chinese, Japanese)."""
    return unicodedata.east_asian_width(char) in ("W", "F")


def _word_start(line: str, i: int) -> bool:
    """Whether a word (or a piece of punctuation before one) starts at `line[i]`."""
    char = line[i]
    if char.isspace():
        return False
    if i == 0:
        return True
    before = line[i - 1]
    return (
        before.isspace()
        or (char.isalnum() and not before.isalnum())
        or _unspaced(char)
        or _unspaced(before)
    )


def _repeats(partial: str, tail: str) -> list[str]:
    """What the model may say again of `partial`, longest first: the endings of its last line
    that start a word (within `REPEAT_WINDOW`), and the `tail` it was asked for."""
    line = partial[partial.rfind("\n") + 1 :]
    first = max(0, len(line) - REPEAT_WINDOW)
    endings = {line[i:] for i in range(first, len(line)) if _word_start(line, i)}
    return sorted(endings | {tail}, key=len, reverse=True)


def _spaced(before: str, after: str) -> bool:
    """Whether one space goes between `before` and `after`, which repeats none of it.

    Yes between a letter or digit and another, unless the cut is evident (a
    number in two: digits on both sides) or the script puts no space there.
    """
    last, first = before[-1:], after[:1]
    if not (last.isalnum() and first.isalnum()):
        return False
    if last.isdigit() and first.isdigit():
        return False
    return not (_unspaced(last) or _unspaced(first))


class Seam:
    """Where the partial ends and its continuation begins: what of the continuation is new.

    `whitespace` is what the partial ends with (it was sent without it). With
    a `tail`, the model was asked by instruction to say the partial's last
    words again: the continuation's start is held back until it can be told
    whether it does (see the module docstring).
    """

    def __init__(self, whitespace: str = "", *, partial: str = "", tail: str = "") -> None:
        self._whitespace = whitespace
        self._pending = whitespace  # What the continuation may still repeat of it.
        self._partial = partial
        self._repeats = _repeats(partial, tail) if tail else []
        self._held: str | None = "" if tail else None  # None: nothing is held any more.

    def event(self, event: StreamEvent) -> list[StreamEvent]:
        """What of `event` is shown: its text past the seam, or the event itself.

        What is still held is released ahead of a tool call and of the end.
        """
        if self._held is None and not self._pending:  # The seam is behind: as it came.
            return [event]
        if isinstance(event, TextDelta):
            text = self._text(event.text)
            return [TextDelta(text)] if text else []
        if isinstance(event, ToolCallStart | ToolCallDelta | ToolCallEnd | StreamEnd):
            text = self._release()
            return [TextDelta(text), event] if text else [event]
        return [event]

    def _text(self, text: str) -> str:
        """What of a piece of the continuation's text is shown now."""
        if self._held is None:
            return self._past_whitespace(text)
        held = self._held + text
        said = held.lstrip()
        if any(len(repeat) >= len(said) and repeat.startswith(said) for repeat in self._repeats):
            self._held = held  # It may still be the repeat asked for (or more of it).
            return ""
        self._held = None
        if repeat := next((r for r in self._repeats if said.startswith(r)), ""):
            return self._past_whitespace(said[len(repeat) :])
        text = self._past_whitespace(held)
        return f" {text}" if not self._whitespace and _spaced(self._partial, text) else text

    def _release(self) -> str:
        """The continuation's text ended: the held whitespace goes on, the words repeated not."""
        held, self._held = self._held, None
        if not held or held.strip():
            return ""
        return self._past_whitespace(held)

    def _past_whitespace(self, text: str) -> str:
        """`text`, without its first characters as far as they repeat the partial's whitespace."""
        pending = self._pending
        n = 0
        while n < len(text) and n < len(pending) and text[n] == pending[n]:
            n += 1
        # All of the piece repeated the seam: more may still. Otherwise the seam is behind.
        self._pending = pending[n:] if n == len(text) else ""
        return text[n:]


class Closable(Protocol):
    async def close(self) -> None: ...


S = TypeVar("S", bound=Closable)
T = TypeVar("T")


@asynccontextmanager
async def create_then_close(create: Awaitable[S]) -> AsyncIterator[S]:
    """Await `create` (an SDK call that opens a stream) and close its stream on every exit."""
    task: asyncio.Task[S] = asyncio.ensure_future(create)
    try:
        yield await task
    finally:
        await asyncio.shield(_close_created(task))


async def _close_created(task: asyncio.Task[Any]) -> None:
    if not task.done():
        task.cancel()  # The request is still on its way: cancelling it drops the connection.
        with contextlib.suppress(BaseException):
            await task
        return
    if task.cancelled() or task.exception() is not None:
        return
    with contextlib.suppress(Exception):
        await task.result().close()


def retry_wait(attempt: int, headers: Any) -> float | None:
    """Seconds to wait before retry number `attempt` (from 1), or None: do not retry."""
    if attempt > RETRIES:
        return None
    wait = _retry_after(headers)
    if wait is None:
        wait = float(2 ** (attempt - 1))
    return wait if wait <= MAX_RETRY_WAIT else None


def _retry_after(headers: Any) -> float | None:
    if headers is None:
        return None
    if (ms := headers.get("retry-after-ms")) is not None:
        with contextlib.suppress(ValueError):
            return max(0.0, float(ms) / 1000)
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    with contextlib.suppress(TypeError, ValueError):
        moment = email.utils.parsedate_to_datetime(value)
        return max(0.0, moment.timestamp() - time.time())
    return None


def status_text(
    label: str, status: int, detail: str, *, model: str, key_hint: str, overloaded: bool = False
) -> str:
    """What an HTTP error status means for the user, with the server's own words."""
    said = f" The server said: {detail}" if detail else ""
    if status == 401:
        return f"{label} refused the API key (401).{said} {key_hint}"
    if status == 403:
        return f"{label} refused the request: the key may not use this model (403).{said}"
    if status == 404:
        return f"{label} does not know the model {model!r}, or the URL is wrong (404).{said}"
    if status == 413:
        return f"The conversation is too large for {label} (413).{said}"
    if status == 429:
        return f"{label} is rate-limiting requests (429); try again shortly.{said}"
    if status == 529 or overloaded:
        return f"{label} is overloaded ({status}); try again shortly.{said}"
    if status >= 500:
        return f"{label} had a server error ({status}).{said}"
    return f"{label} rejected the request ({status}).{said}"


def error_detail(body: Any, fallback: str = "") -> str:
    """The human part of an API error body: `{"error": {"message": ...}}` in both APIs."""
    error = _error_of(body)
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        body = error["message"]
    elif isinstance(error, str):
        body = error
    if isinstance(body, str):  # An HTML error page, say: its start, redacted before the cut.
        text, cut = redact.clip(body, DETAIL_LIMIT)
        return f"{text}…" if cut else text
    return fallback


# Reading what a server sent as JSON: any field may be missing, null or of another type.


def field(mapping: dict[str, Any], name: str, kind: type[T]) -> T | None:
    """`mapping[name]` if it is a `kind`, else None."""
    value = mapping.get(name)
    return value if isinstance(value, kind) else None


def integer(value: Any) -> int | None:
    """`value` if it is an integer (not a bool), else None."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def count(mapping: dict[str, Any], name: str) -> int:
    """A token count: `mapping[name]` if it is an integer, else 0."""
    return integer(mapping.get(name)) or 0


def items(value: Any) -> list[Any]:
    """`value` if it is a list, else an empty one."""
    return value if isinstance(value, list) else []


def json_text(value: Any) -> str:
    """Streamed JSON text: a string as it is, an object or an array (sent unquoted) as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return ""


def error_kind(body: Any) -> str | None:
    """The error's type in either API's body (`overloaded_error`, say), if it gives one.

    Gateways send `{"error": "Unauthorized"}`, a bare string: no type then.
    """
    error = _error_of(body)
    return error["type"] if isinstance(error, dict) and isinstance(error.get("type"), str) else None


def _error_of(body: Any) -> Any:
    """The `error` of an API error body (`{"error": {...}}` in both APIs), or the body itself."""
    return body.get("error", body) if isinstance(body, dict) else None


class ErrorEvent(Exception):
    """An error the server sent inside a stream that had begun with status 200."""

    def __init__(self, body: Any) -> None:
        super().__init__("an error event in the stream")
        self.body = body  # The event's JSON, of whatever shape the server chose.


def stream_error_text(label: str, body: Any) -> str:
    """An error the server sent in the middle of the reply, in words."""
    detail = error_detail(body)
    said = f" The server said: {detail}" if detail else ""
    if error_kind(body) == "overloaded_error":
        return f"{label} is overloaded and stopped mid-reply; try again shortly.{said}"
    return f"{label} reported an error in the middle of the reply.{said}"


def unreadable_text(label: str) -> str:
    """The last resort: a failure nothing above explains, without a Python exception in it."""
    return (
        f"{label} sent something chatui could not read, so the reply was cut off there; "
        "the server may not be fully compatible."
    )


def transport_text(label: str, base_url: str, error: BaseException) -> str | None:
    """A connection-level failure in words, or None if `error` is not one.

    It names the host that failed, and blames `base_url` only when one is
    set: without it the host is the provider's own, and the network is what
    the user can check.
    """
    names = {cls.__name__ for cls in type(error).__mro__}
    chain: list[BaseException] = []
    cause: BaseException | None = error.__cause__ or error.__context__
    while cause is not None and len(chain) < 5:
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    cause_names = {cls.__name__ for link in chain for cls in type(link).__mro__}
    host = _host_of(error) or urlsplit(base_url).hostname or "its API's host"
    where = base_url or host
    text = " ".join(str(link) for link in [error, *chain]).lower()
    if names & {"APITimeoutError", "ReadTimeout", "TimeoutException", "ConnectTimeout"}:
        return f"{label} did not answer in time ({where})."
    if json.JSONDecodeError.__name__ in names:
        return f"{label} sent stream data that is not JSON; the reply was cut off there."
    if names & {"RemoteProtocolError", "ReadError"} or cause_names & {
        "RemoteProtocolError",
        "ReadError",
    }:
        return f"The connection to {label} was dropped in the middle of the reply."
    if names & {"APIConnectionError", "ConnectError", "NetworkError", "TransportError"}:
        if "ssl" in text or "certificate" in text or "tls" in text:
            if base_url:
                return f"The TLS handshake with {where} failed: check base_url and its certificate."
            return (
                f"The TLS handshake with {host} failed: a proxy or this system's "
                "certificates may be in the way."
            )
        dns = ("name or service", "name resolution", "nodename", "getaddrinfo")
        if any(words in text for words in dns):
            if base_url:
                return (
                    f"chatui could not resolve {host} (DNS): check base_url ({base_url}) "
                    "and the network connection."
                )
            return f"chatui could not resolve {host} (DNS): check the network connection."
        if "refused" in text or "all connection attempts failed" in text:
            if base_url:
                return f"Nothing answers at {where} (connection refused): is the server running?"
            return f"{host} refused the connection: check the network connection and any proxy."
        return f"chatui could not reach {label} at {where}."
    return None


def _host_of(error: BaseException) -> str | None:
    """The host of the request that failed (both SDKs' connection errors carry the request)."""
    try:
        request = getattr(error, "request", None)
    except RuntimeError:  # httpx's errors raise it when they have no request.
        return None
    host = getattr(getattr(request, "url", None), "host", None)
    return host if isinstance(host, str) and host else None


def retryable_connection(error: BaseException) -> bool:
    """A connection that failed in a way worth another try: not TLS, not DNS, no timeout."""
    names = {cls.__name__ for cls in type(error).__mro__}
    if "APIConnectionError" not in names or "APITimeoutError" in names:
        return False
    text = transport_text("", "", error) or ""
    return "TLS" not in text and "DNS" not in text


StatusOf = Callable[[BaseException], tuple[int, Any] | None]
"""An SDK error's HTTP status and response headers, or None if it has none."""


async def with_retries(
    attempt: Callable[[], AsyncGenerator[StreamEvent, None]],
    explain: Callable[[BaseException], ProviderError],
    status_of: StatusOf,
) -> AsyncGenerator[StreamEvent, None]:
    """The events of `attempt()`, tried again per the policy above while nothing was shown.

    Once an attempt has yielded an event, nothing is retried: the reply has
    begun. Every error that ends the stream leaves as `explain(error)`.
    """
    tries = 0
    while True:
        tries += 1
        shown = False
        try:
            async with aclosing(attempt()) as events:
                async for event in events:
                    shown = True
                    yield event
            return
        except (ProviderError, asyncio.CancelledError):
            raise
        except Exception as error:
            wait, reason = None, ""
            if not shown and (status := status_of(error)) is not None:
                code, headers = status
                if code in RETRY_STATUSES:
                    wait, reason = retry_wait(tries, headers), str(code)
            elif not shown and retryable_connection(error):
                wait, reason = retry_wait(tries, None), "no connection"
            if wait is None:
                raise _explained(explain, error) from None
        yield RetryWait(wait, reason)
        await asyncio.sleep(wait)  # A stop cancels it at once.


def _explained(
    explain: Callable[[BaseException], ProviderError], error: Exception
) -> ProviderError:
    """`explain(error)`, or a plain sentence if a body of an unforeseen shape made it fail."""
    try:
        return as_overflow(error, explain(error))
    except Exception:
        return ProviderError(unreadable_text("The server"))


class RemoteProvider(ProviderLifecycle):
    """A provider behind an HTTP API: one SDK client, one streaming call per request.

    A subclass gives `_make_client` (with the SDK's own retries off),
    `_open(client, request)` (the SDK's streaming `create()` call), `_read`
    (its stream as events: the body of the SDK stream's `response`, read
    with `chatui.providers.sse`), `_explain` (its errors in words), and
    `unavailable` (a missing key, say).
    """

    name = "remote"
    label = "the server"
    model = ""

    def __init__(self, api_key: str) -> None:
        self._api_key = api_key
        self._client: Any = None

    @property
    def secrets(self) -> list[str]:
        """The API key: the turn redacts it from every error text."""
        return [self._api_key] if self._api_key else []

    base_url = ""  # Where the server is, when it is not the provider's own.
    configured_context_window = 0  # The config's context_window; 0: not set.
    server_context_window: int | None = None  # What the server reported, if it does.
    max_tokens = 0
    prefill_refused = False  # The server refused a prefill: "auto" asks by instruction.

    @property
    def context_window(self) -> int | None:
        """The smallest window known: configured, reported by the server, or learned."""
        known = (
            self.configured_context_window,
            self.server_context_window,
            self.learned_context_window,
        )
        return min((w for w in known if w), default=None)

    @property
    def reply_room(self) -> int:
        """The configured max_tokens, but at most half a known window: the rest is the prompt's.

        A small window (a llama.cpp server started with `-c 2048`) would
        otherwise leave no room for any prompt. It is what the request asks for.
        """
        window = self.context_window
        return min(self.max_tokens, max(window // 2, 1)) if window else self.max_tokens

    async def problem(self) -> str | None:
        """`unavailable()`, or whether the `base_url` server takes connections (a TCP probe)."""
        if (why := self.unavailable()) is not None or not self.base_url:
            return why
        try:
            url = urlsplit(self.base_url)
            port = url.port or (443 if url.scheme == "https" else 80)
            async with asyncio.timeout(PROBE_TIMEOUT):
                _reader, writer = await asyncio.open_connection(url.hostname, port)
        except ValueError:
            return f"The base_url {self.base_url!r} of {self.label} is not a valid URL."
        except (OSError, TimeoutError) as error:
            return f"{self.label} at {self.base_url} cannot be reached ({_unreachable(error)})."
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return None

    def _make_client(self) -> Any:
        raise NotImplementedError

    def _open(self, client: Any, request: ModelRequest) -> Awaitable[Any]:
        raise NotImplementedError

    def _read(self, stream: Any) -> AsyncGenerator[StreamEvent, None]:
        raise NotImplementedError

    def _explain(self, error: BaseException) -> ProviderError:
        raise NotImplementedError

    async def _continue(self, request: ModelRequest) -> tuple[list[ChatMessage], Seam]:
        """The messages sent to continue the partial, and its seam: by instruction, unless
        a subclass knows its API continues a final assistant message."""
        return continued(request.messages, prefill=False)

    def _falls_back(self) -> bool:
        """Whether a refused prefill is asked again by instruction (`continue_with` "auto")."""
        return False

    def _refuses_prefill(self, error: BaseException) -> bool:
        """Whether `error` is the server refusing the prefill (see the module docstring)."""
        status = self._status_of(error)
        if status is None or status[0] not in (400, 422):
            return False
        said = error_detail(getattr(error, "body", None), str(getattr(error, "message", "")))
        return any(words in said.lower() for words in PREFILL_REFUSALS)

    def _not_utf8(self) -> None:
        """The reply held bytes that are not UTF-8 (told once a reply): they show as U+FFFD."""
        self.on_notice(
            f"{self.label[:1].upper()}{self.label[1:]} sent text that is not valid UTF-8; "
            "what could not be read is shown as \N{REPLACEMENT CHARACTER}."
        )

    def _status_of(self, error: BaseException) -> tuple[int, Any] | None:
        # Both SDKs' APIStatusError carry the status and the httpx response.
        status, response = getattr(error, "status_code", None), getattr(error, "response", None)
        if not isinstance(status, int):
            return None
        return status, getattr(response, "headers", None)

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.close()

    @asynccontextmanager
    async def stream(self, request: ModelRequest) -> AsyncIterator[AsyncIterator[StreamEvent]]:
        events = self._events(request)
        try:
            yield events
        finally:
            # Same task, and the generator is not mid-read: closing it closes the SDK
            # stream inside it (`create_then_close`, shielded).
            await events.aclose()

    async def _events(self, request: ModelRequest) -> AsyncGenerator[StreamEvent, None]:
        if (why := self.unavailable()) is not None:
            raise ProviderError(why)
        if self._client is None:
            self._client = self._make_client()
        sent, seam, prefilled = request, Seam(), False
        if request.continuing:
            messages, seam = await self._continue(request)
            prefilled = bool(messages) and messages[-1].role == "assistant" and self._falls_back()
            sent = dataclasses.replace(request, messages=messages)
        while True:  # Twice at most: `PrefillRefused` comes only of a prefill.
            try:
                async with aclosing(self._attempts(sent, prefilled=prefilled)) as events:
                    async for event in events:
                        for shown in seam.event(event):
                            yield shown
                return
            except PrefillRefused:  # Nothing of the reply came: the same request, by instruction.
                self.prefill_refused = True
                messages, seam = continued(request.messages, prefill=False)
                sent, prefilled = dataclasses.replace(request, messages=messages), False

    def _attempts(
        self, request: ModelRequest, *, prefilled: bool = False
    ) -> AsyncGenerator[StreamEvent, None]:
        """`request`'s events, with the retry policy; `prefilled`: a refusal of its prefill
        raises `PrefillRefused` (when `continue_with` lets it be asked again)."""
        client = self._client

        async def attempt() -> AsyncGenerator[StreamEvent, None]:
            try:
                async with (
                    create_then_close(self._open(client, request)) as stream,
                    aclosing(self._read(stream)) as events,
                ):
                    async for event in events:
                        yield event
            except Exception as error:
                if prefilled and self._refuses_prefill(error):
                    raise PrefillRefused(str(_explained(self._explain, error))) from error
                raise

        return with_retries(attempt, self._explain, self._status_of)


def _unreachable(error: OSError | TimeoutError) -> str:
    """Why a connection to a server failed, in words (asyncio's own say "Connect call failed")."""
    if isinstance(error, TimeoutError):
        return "no answer"
    if isinstance(error, socket.gaierror):
        return "its host name could not be found"
    if isinstance(error, ConnectionRefusedError) or "Connect call failed" in str(error):
        return "nothing is listening there"
    return error.strerror or "the connection failed"
