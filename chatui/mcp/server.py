"""One MCP server: its session held open by one long-lived task, and its calls, stopped for real.

The SDK's session (and the transports under it) open anyio task groups and
cancel scopes, which must be left by the task that entered them. So each
start of a server runs in an owner task of its own: it opens the transport
(chatui's `StdioTransport`, or the SDK's Streamable HTTP client), makes the
handshake and lists the tools, all within `start_timeout`, then serves:
relists the tools when the server says they changed, notices when the
server goes away, and leaves (closing the session and the transport) when
asked to. Calls are made from other tasks, which the session allows.

The session is `mcp.Client(..., mode="auto")`: it probes `server/discover`
and speaks the 2026-07-28 protocol to a server that does, else falls back to
the `initialize` handshake. The stop is the same to the caller either way,
but goes out differently: over stdio, both eras send
`notifications/cancelled` with the call's request id; over Streamable HTTP,
a 2026 server sees the call's POST aborted, and a 2025 one gets the
notification POSTed. On 2026 connections the tool list's changes come
through a `subscriptions/listen` stream, which the owner task holds open.

A call (`McpServer.call`) runs its request in a child task and awaits it
shielded. When the caller is cancelled (Esc, a timeout, a quit), it cancels
the child, which makes the SDK send the cancellation, and re-raises at once:
the caller never waits for that write (the SDK may take up to 5 s for it on
a blocked pipe). When the child has finished, listeners hear `CancelSent`.
Whatever comes from the call after the stop (a late answer, progress) is
dropped. A server that dies fails its running calls with a sentence
(`McpCallError`) and is FAILED; its next use starts it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from contextvars import copy_context
from typing import Any

import anyio
import httpx2
import mcp_types
from mcp.client import Client
from mcp.client.session import IncomingMessage, MessageHandlerFnT
from mcp.client.streamable_http import streamable_http_client
from mcp.client.subscriptions import Subscription
from mcp.shared.dispatcher import ProgressFnT
from mcp.shared.exceptions import MCPError
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import ValidationError

from chatui import __version__
from chatui.config import McpServerConfig
from chatui.mcp.events import CancelSent, McpEvent, StatusChanged
from chatui.mcp.logs import ServerLog, current_log
from chatui.mcp.status import ServerState, ServerStatus
from chatui.mcp.stdio import StartError, StdioTransport
from chatui.sanitize import visible
from chatui.tools.protocol import ToolProgress

CLIENT_INFO = mcp_types.Implementation(name="chatui", version=__version__)
MAX_PAGES = 100  # Pages of tools/list read at most: a server that never stops paging is cut.
CALLS_GRACE = 0.5  # Seconds `close()` gives stopped calls to send their cancellation.
LOST_WAIT = 3.0  # Seconds a call that lost its server waits to learn how the server ended.
HTTP_TIMEOUT = 30.0  # Seconds for an HTTP request to connect, send, or answer...
HTTP_READ_TIMEOUT = 300.0  # ...and between two events of a stream (a long call's).
MAX_ERROR = 500  # Characters of a server's error message kept in a sentence.

logger = logging.getLogger("chatui.mcp")


class McpCallError(Exception):
    """A call that could not be made or did not finish; str() is a sentence for model and user."""


def _ignore_event(event: McpEvent) -> None:
    pass


def _ignore_listing(server: McpServer) -> None:
    pass


class McpServer:
    """One configured server: started in the background, restarted on use after a failure."""

    def __init__(
        self,
        config: McpServerConfig,
        log: ServerLog,
        *,
        environ: Mapping[str, str] | None = None,
        notify: Callable[[McpEvent], None] = _ignore_event,
        on_listing: Callable[[McpServer], None] = _ignore_listing,
    ) -> None:
        """`notify` hears its events; `on_listing` runs each time it has listed its tools."""
        self.name = config.name
        self.config = config
        self.log = log
        self._environ = environ
        self._notify = notify
        self._on_listing = on_listing
        self._state = ServerState.STOPPED
        self._reason = "" if config.enabled else "It is disabled in the config."
        self._listing: list[mcp_types.Tool] = []
        self._client: Client | None = None
        self._stdio: StdioTransport | None = None
        self._owner: asyncio.Task[None] | None = None
        self._attempt = asyncio.Event()  # Set once the current start ends, ready or not.
        self._ended = asyncio.Event()  # Set once the current owner task has ended.
        self._wake = asyncio.Event()  # The owner task has something to do.
        self._stopping = False
        self._relist = False  # It said its tools changed: list them again.
        self._relisting = False
        self._lost: str | None = None  # Why the connection ended, once it has.
        self._calls: set[asyncio.Task[mcp_types.CallToolResult]] = set()

    @property
    def status(self) -> ServerStatus:
        return ServerStatus(
            self.name,
            self.config.transport,
            self._state,
            len(self._listing),
            self._reason,
            str(self.log.path),
        )

    @property
    def listing(self) -> list[mcp_types.Tool]:
        """Its tools as last listed (kept while it is failed or restarting)."""
        return self._listing

    @property
    def pid(self) -> int | None:
        """The process of a stdio server's current run (its process group's id), if any."""
        return self._stdio.pid if self._stdio is not None else None

    # Lifecycle

    def start(self) -> None:
        """Begin starting it in the background, unless it is starting or ready (or disabled)."""
        if not self.config.enabled or (self._owner is not None and not self._owner.done()):
            return
        self._stopping, self._relist, self._relisting, self._lost = False, False, False, None
        self._attempt, self._ended, self._wake = asyncio.Event(), asyncio.Event(), asyncio.Event()
        self._set(ServerState.STARTING, "")
        context = copy_context()
        context.run(current_log.set, self.log)  # The SDK's records in its tasks go to its log.
        self._owner = asyncio.create_task(
            self._own(self._attempt, self._ended, self._wake),
            name=f"mcp server {self.name}",
            context=context,
        )

    async def ready(self) -> None:
        """Start it if need be and wait until it is READY; McpCallError if it cannot start.

        Cancelling this wait (a stop) leaves the server starting.
        """
        if not self.config.enabled:
            raise McpCallError(f"The MCP server {self.name} is disabled in the config.")
        if self._state is ServerState.READY and self._client is not None:
            return
        if self._state is not ServerState.STARTING:
            self.start()
        await self._attempt.wait()
        if self._state is ServerState.READY and self._client is not None:
            return
        if self._state is ServerState.FAILED:
            raise McpCallError(f"The MCP server {self.name} could not start. {self._reason}")
        raise McpCallError(f"The MCP server {self.name} was stopped.")

    async def restart(self) -> None:
        """Close it (bounded), then start it again in the background."""
        await self.close()
        self.start()

    async def close(self) -> None:
        """Stop its calls (each sends its cancellation), close the session, end the process.

        Bounded: the transport's close is (about 2 s at most for a stdio server).
        """
        owner = self._owner
        if owner is None or owner.done():
            if self._state is not ServerState.STOPPED and self.config.enabled:
                self._set(ServerState.STOPPED, "")
            return
        self._stopping = True
        calls = [call for call in self._calls if not call.done()]
        for call in calls:
            call.cancel()
        if calls:
            await asyncio.wait(calls, timeout=CALLS_GRACE)
        if self._state is ServerState.STARTING:
            owner.cancel()  # It is in the handshake, which no event interrupts.
        self._wake.set()
        await asyncio.wait([owner])

    def abandon(self) -> None:
        """Cancel its owner task without waiting (a quit past its grace; kill_now() follows)."""
        self._stopping = True
        if self._owner is not None:
            self._owner.cancel()

    # Calls

    async def call(
        self,
        tool: str,
        arguments: dict[str, Any],
        *,
        call_id: str,
        on_progress: Callable[[ToolProgress], None],
    ) -> mcp_types.CallToolResult:
        """Call `tool` (the server's own name) and return its result (see the module docstring).

        McpCallError for a call that could not be made or finish: the server
        would not start, died, refused the call, or sent something malformed.
        `on_progress` runs on the loop, outside the caller's task, and never
        after this returns or raises.
        """
        await self.ready()
        client = self._client
        if client is None:
            raise McpCallError(f"The MCP server {self.name} stopped before the call.")
        live = [True]

        async def report(progress: float, total: float | None, message: str | None) -> None:
            if live[0]:
                on_progress(ToolProgress(progress, total, message))

        context = copy_context()
        context.run(current_log.set, self.log)
        child = asyncio.create_task(self._request(client, tool, arguments, report), context=context)
        self._calls.add(child)
        child.add_done_callback(self._calls.discard)
        try:
            return await asyncio.shield(child)
        except asyncio.CancelledError:
            live[0] = False
            this = asyncio.current_task()
            if child.cancelled() and this is not None and not this.cancelling():
                # Not our caller's stop: `close()` stopped the call.
                raise McpCallError(
                    f"The MCP server {self.name} was stopped during the call."
                ) from None
            if child.done():
                raise  # It had finished: its answer is dropped; there is nothing to cancel.
            child.cancel()  # The SDK sends the cancellation (or aborts the POST).
            child.add_done_callback(lambda done: self._cancel_sent(call_id, done))
            raise
        finally:
            live[0] = False

    def _cancel_sent(self, call_id: str, child: asyncio.Task[mcp_types.CallToolResult]) -> None:
        if not child.cancelled():
            child.exception()  # Retrieved: an error after the stop is nobody's.
            return
        self._notify(CancelSent(call_id, self.name))

    async def _request(
        self,
        client: Client,
        tool: str,
        arguments: dict[str, Any],
        progress: ProgressFnT,
    ) -> mcp_types.CallToolResult:
        """The call itself, its failures made sentences."""
        try:
            return await client.call_tool(tool, arguments, progress_callback=progress)
        except MCPError as error:
            if error.code == mcp_types.CONNECTION_CLOSED:
                raise McpCallError(await self._stopped_during_call()) from None
            raise McpCallError(
                _sentence(
                    f"The MCP server {self.name} answered the call with an error: "
                    f"{self._safe(error.message)}"
                )
            ) from None
        except ValidationError:
            raise McpCallError(
                f"The MCP server {self.name} sent a malformed result for {self._safe(tool)}."
            ) from None
        except RuntimeError as error:  # The SDK's check of the result against outputSchema.
            raise McpCallError(
                _sentence(
                    f"The MCP server {self.name} sent a result that breaks {self._safe(tool)}'s "
                    f"output schema: {self._safe(str(error))}"
                )
            ) from None
        except (httpx2.HTTPError, OSError, anyio.BrokenResourceError, anyio.ClosedResourceError):
            self._connection_lost("chatui lost its connection to it.")
            raise McpCallError(await self._stopped_during_call()) from None

    async def _stopped_during_call(self) -> str:
        """The sentence for a call whose server went away: how it ended, once known."""
        if self.config.transport == "http":
            self._connection_lost("It closed the connection.")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(LOST_WAIT):
                await asyncio.shield(self._ended.wait())
        reason = self._reason if self._state is ServerState.FAILED else "It closed the connection."
        return (
            f"The MCP server {self.name} stopped during the call. {reason} "
            "It will be started again on its next use."
        )

    def _connection_lost(self, reason: str) -> None:
        if self._lost is None:
            self._lost = reason
        self._wake.set()

    # The owner task

    async def _own(self, attempt: asyncio.Event, ended: asyncio.Event, wake: asyncio.Event) -> None:
        self.log.begin(f"starting {self.name}")
        reason = ""
        try:
            transport = self._transport()
            client = Client(
                transport,
                mode="auto",
                message_handler=self._message_handler(wake),
                client_info=CLIENT_INFO,
                cache=None,
            )
            with anyio.move_on_after(self.config.start_timeout) as starting:
                async with client, contextlib.AsyncExitStack() as stack:
                    self._connected(client)
                    # Subscribed before the listing, so that no change falls between the two.
                    subscription = await self._subscribe(client, stack)
                    listing = await self._list_tools(client)
                    starting.deadline = math.inf
                    self._client = client
                    self._publish(listing)
                    attempt.set()
                    reason = await self._serve(wake, subscription)
            if starting.cancelled_caught:
                reason = (
                    f"It did not finish starting within {self.config.start_timeout:g} s "
                    "(the handshake or the tools' list)."
                )
        except Exception as error:
            reason = reason or self._start_failure(error)
            self.log.line(f"ended: {reason}")
        finally:
            self._client = None
            if self._stopping:
                self._set(ServerState.STOPPED, "")
            else:
                self._set(ServerState.FAILED, reason or "It stopped.")
            attempt.set()
            ended.set()

    def _transport(self) -> Any:
        if self.config.transport == "http":
            self._stdio = None
            return _http_transport(self.config)
        self._stdio = StdioTransport(self.config, self.log, self._environ)
        return self._stdio

    def _message_handler(self, wake: asyncio.Event) -> MessageHandlerFnT:
        async def handle(message: IncomingMessage) -> None:
            if isinstance(message, mcp_types.ToolListChangedNotification):
                self._relist = True
                wake.set()
            elif isinstance(message, Exception):
                self.log.line(f"from the connection: {type(message).__name__}: {message}")

        return handle

    async def _serve(self, wake: asyncio.Event, subscription: Subscription | None) -> str:
        """Until asked to stop (returns "") or the server goes away (returns why)."""
        async with anyio.create_task_group() as group:
            if subscription is not None:
                group.start_soon(self._follow, subscription, wake)
            if self._stdio is not None:
                group.start_soon(self._watch_process, self._stdio)
            try:
                while True:
                    await wake.wait()
                    wake.clear()
                    if self._stopping:
                        return ""
                    if self._lost is not None:
                        return self._lost
                    if self._relist and not self._relisting and self._client is not None:
                        self._relisting = True  # In a task: a stop never waits for it.
                        group.start_soon(self._relist_tools, self._client)
            finally:
                group.cancel_scope.cancel()
        return ""  # Not reached: the loop returns.

    async def _watch_process(self, stdio: StdioTransport) -> None:
        await stdio.lost.wait()
        self._connection_lost(await stdio.ending())

    async def _subscribe(
        self, client: Client, stack: contextlib.AsyncExitStack
    ) -> Subscription | None:
        """A 2026 server tells its tool list's changes to a `subscriptions/listen` stream."""
        if not _listens(client):
            return None
        try:
            return await stack.enter_async_context(client.listen(tools_list_changed=True))
        except Exception as error:
            self.log.line(f"no news of its tool list: {type(error).__name__}: {error}")
            return None

    async def _follow(self, subscription: Subscription, wake: asyncio.Event) -> None:
        try:
            async for _event in subscription:
                self._relist = True
                wake.set()
        except Exception as error:
            self.log.line(f"no more news of its tool list: {type(error).__name__}: {error}")

    async def _list_tools(self, client: Client) -> list[mcp_types.Tool]:
        tools: list[mcp_types.Tool] = []
        cursor: str | None = None
        for _page in range(MAX_PAGES):
            page = await client.list_tools(cursor=cursor)
            tools += page.tools
            cursor = page.next_cursor
            if not cursor:
                break
        return tools

    async def _relist_tools(self, client: Client) -> None:
        """List its tools again, as long as it says they changed (within `start_timeout` each)."""
        try:
            while self._relist:
                self._relist = False
                try:
                    with anyio.fail_after(self.config.start_timeout):
                        listing = await self._list_tools(client)
                except Exception as error:  # Its tools stay as they were.
                    self.log.line(
                        f"could not list its tools again: {type(error).__name__}: {error}"
                    )
                    return
                self._publish(listing)
        finally:
            self._relisting = False

    def _connected(self, client: Client) -> None:
        info = client.server_info
        who = " ".join(filter(None, (info.name, info.version))) if info is not None else ""
        self.log.line(
            f"connected to {who or 'a server with no name'}, protocol {client.protocol_version}"
        )

    def _publish(self, listing: list[mcp_types.Tool]) -> None:
        self._listing = listing
        self._on_listing(self)
        self.log.line(f"listed {len(listing)} tools")
        self._set(ServerState.READY, "", always=True)

    def _set(self, state: ServerState, reason: str, *, always: bool = False) -> None:
        changed = (state, reason) != (self._state, self._reason)
        self._state, self._reason = state, reason
        if changed or always:
            self._notify(StatusChanged(self.status))

    def _start_failure(self, error: BaseException) -> str:
        """Why a start (or a run) failed, as a sentence."""
        leaf = _leaf(error)
        stdio = self._stdio
        if isinstance(leaf, StartError):
            return str(leaf)
        if stdio is not None and stdio.returncode is not None:
            return stdio.ended
        if isinstance(leaf, MCPError) and leaf.code == mcp_types.CONNECTION_CLOSED:
            return "It closed the connection while starting."
        if isinstance(leaf, MCPError):
            return _sentence(f"It refused the handshake: {self._safe(leaf.message)}")
        if isinstance(leaf, httpx2.HTTPError | OSError):
            where = self._safe(self.config.url)
            return _sentence(f"chatui could not reach it at {where}: {self._safe(str(leaf))}")
        return _sentence(f"It could not be started: {type(leaf).__name__}: {self._safe(str(leaf))}")

    def _safe(self, text: str) -> str:
        """Untrusted text for a sentence: keys masked, control characters visible, cut short."""
        text = visible(self.log.redact(text)).strip()
        return text if len(text) <= MAX_ERROR else text[:MAX_ERROR] + "…"


def _sentence(text: str) -> str:
    """`text` ending as a sentence does."""
    return text if text.endswith((".", "!", "?", "…")) else text + "."


def _listens(client: Client) -> bool:
    tools = client.server_capabilities.tools
    return (
        client.protocol_version in MODERN_PROTOCOL_VERSIONS
        and tools is not None
        and bool(tools.list_changed)
    )


def _leaf(error: BaseException) -> BaseException:
    """The first exception in `error` that is not a group (the SDK's task groups nest them)."""
    while isinstance(error, BaseExceptionGroup):
        error = next(
            (e for e in error.exceptions if not isinstance(e, asyncio.CancelledError)),
            error.exceptions[0],
        )
    return error


@asynccontextmanager
async def _http_transport(config: McpServerConfig) -> AsyncIterator[Any]:
    """The SDK's Streamable HTTP transport, with the config's headers on every request."""
    timeout = httpx2.Timeout(HTTP_TIMEOUT, read=HTTP_READ_TIMEOUT)
    async with (
        httpx2.AsyncClient(headers=config.headers, timeout=timeout) as http,
        streamable_http_client(config.url, http_client=http) as streams,
    ):
        yield streams
