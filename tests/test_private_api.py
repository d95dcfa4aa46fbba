"""Private API is used only where a ledger says why, and code points at nothing outside the repo.

Textual: chatui's use of Textual's private API lives in `chatui/_textual/`,
whose package docstring is the ledger (one entry per module: what it
touches, its gain, its guarding test, what would retire it). Outside that
package, no chatui module may
- import a private Textual module (`textual._x`, `textual.widgets._x`,
  `from textual import _x`), found in the `import` statements' syntax tree;
- touch a private hook the ledger names: the last part of each backticked
  dotted name in the ledger, when it starts with `_` (`Screen._compositor_refresh`
  gives `_compositor_refresh`), and the public-looking names that Textual
  does not document, listed in `UNDOCUMENTED_HOOKS` (each must also be in the
  ledger). "Touch" means an attribute of that name on any object, a method of
  that name, or `getattr`/`setattr`/`hasattr`/`delattr` with that name written
  as a literal.
Every ledger entry names modules that exist, a gain (or the correctness it
keeps), what would retire it and a guarding test that exists; every module
of the package has an entry.

llama-cpp-python: the private names chatui/providers/local/ uses are listed in
the docstring of chatui/providers/local/llama_engine.py, with the version pin
they rely on. In those files, a private name (one leading underscore) used
as an attribute, a method or a keyword argument passes only if that ledger
lists it, or if those files define it themselves and llama-cpp-python's own
source does not (chatui's helpers: `self.cache._commit`). So `self._model` in
a subclass of `Llama` fails like `llm._model` until it is listed. Two tests
here guard entries of that ledger that no other test would notice breaking.

Code points at nothing outside the repository: no comment or docstring in
chatui/, tests/ or bench/ cites an issue, a defect or the design notes by
number (the grep of the review, case-insensitive, and with a hyphen too);
the cancellation contract is in docs/cancellation.md.

The limits, honestly: these checks go by names, not types. They cannot tell
a Textual or llama_cpp object from another, so a private Textual attribute
the ledger does not name passes, and chatui's own attribute that shares a
ledgered or a llama_cpp private name is taken for it (rename it). A private
name reached through `importlib`, a computed `getattr` name, or `vars()` is
not seen. The private-API checks leave tests and benchmarks alone: they
reach into the same private API to guard it and to time it.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import llama_cpp
import pytest

from chatui.providers.local import llama_engine
from chatui.providers.local.tool_grammar import ToolGrammar
from tests.support.tiny_gguf import write_tiny_model

ROOT = Path(__file__).resolve().parent.parent
CHATUI = ROOT / "chatui"
TEXTUAL_PACKAGE = CHATUI / "_textual"
LOCAL = CHATUI / "providers" / "local"
LLAMA_LEDGER = LOCAL / "llama_engine.py"

UNDOCUMENTED_HOOKS = frozenset(
    {
        "screen_layout_refresh_signal",  # The screen's signal after each layout.
        "render_lines",  # The compositor's call for a widget's lines, borders included.
        "arrange",  # Textual's docs say to leave it alone.
    }
)
ATTRIBUTE_CALLS = frozenset({"getattr", "setattr", "hasattr", "delattr"})

# What the grep of the review looks for; the words are split so this file does not match.
OUTSIDE_REFERENCE = re.compile(
    r"(?:issue|defect)[ #-]?[0-9]+|contract point [0-9]+|" + "design" + r"\s+contract",
    re.IGNORECASE,
)
TEXT_SUFFIXES = {".py", ".md", ".tcss", ".toml", ".txt", ".cfg", ".ini", ".json", ".yaml"}


# The ledgers


def docstring(path: Path) -> str:
    text = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
    assert text, f"{path.relative_to(ROOT)} has no docstring"
    return text


def ledger_entries(text: str, heading: str) -> list[str]:
    """The first bulleted list after the line starting with `heading`, each entry on one line."""
    lines = iter(text.splitlines())
    for line in lines:
        if line.startswith(heading):
            break
    else:
        raise AssertionError(f"no ledger heading {heading!r}")
    entries: list[str] = []
    for line in lines:
        if line.startswith("- "):
            entries.append(line[2:])
        elif line.startswith("  ") and entries:
            entries[-1] += " " + line.strip()
        elif entries:
            break  # The list ended.
    assert entries, f"the ledger after {heading!r} is empty"
    return entries


def leading_names(entry: str) -> list[str]:
    """The backticked names an entry starts with: "`input`, `terminal_driver`: ..."."""
    head = re.match(r"(?:`[\w.]+`(?:,? and |, )?)+", entry)
    assert head, f"a ledger entry names no module: {entry[:60]!r}"
    return re.findall(r"`([\w.]+)`", head.group())


def textual_ledger() -> list[str]:
    return ledger_entries(docstring(TEXTUAL_PACKAGE / "__init__.py"), "Ledger (")


def llama_ledger() -> list[str]:
    return ledger_entries(docstring(LLAMA_LEDGER), "llama-cpp-python's private API")


def is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def ledgered_hooks() -> set[str]:
    """The private names the Textual ledger lists: `Screen._compositor_refresh` → that method."""
    hooks = set()
    for entry in textual_ledger():
        for span in re.findall(r"`([^`]+)`", entry):
            last = span.split(".")[-1]
            if re.fullmatch(r"_\w+", last) and is_private(last):
                hooks.add(last)
    return hooks


# What a module does


def outside_modules() -> list[Path]:
    """chatui's modules outside chatui/_textual/."""
    return sorted(p for p in CHATUI.rglob("*.py") if TEXTUAL_PACKAGE not in p.parents)


def private_textual_imports(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """(line, module) of each import of a private Textual module."""

    def private(module: str) -> bool:
        parts = module.split(".")
        return parts[0] == "textual" and any(is_private(part) for part in parts[1:])

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if private(alias.name):
                    yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if private(node.module):
                yield node.lineno, node.module
            elif node.module.split(".")[0] == "textual":
                for alias in node.names:
                    if is_private(alias.name):
                        yield node.lineno, f"{node.module}.{alias.name}"


def names_touched(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """(line, name) of every attribute, method and literal `getattr`-style name in `tree`."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            yield node.lineno, node.attr
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield node.lineno, node.name
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ATTRIBUTE_CALLS
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
        ):
            yield node.lineno, node.args[1].value


def private_names_used(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """(line, name) of each private attribute, method and keyword argument in `tree`."""
    for line, name in names_touched(tree):
        if is_private(name):
            yield line, name
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg and is_private(node.arg):
            yield node.lineno, node.arg


def private_names_defined(tree: ast.AST) -> set[str]:
    """Private names `tree` defines: functions, classes, arguments, names and attributes set."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
    return {name for name in names if is_private(name)}


def parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def where(path: Path, line: int) -> str:
    return f"{path.relative_to(ROOT)}:{line}"


def textual_violations(path: Path, tree: ast.AST, hooks: set[str]) -> list[str]:
    found = [
        f"{where(path, line)} imports {module}" for line, module in private_textual_imports(tree)
    ]
    found += [
        f"{where(path, line)} touches {name}" for line, name in names_touched(tree) if name in hooks
    ]
    return found


# Textual


def test_the_checks_catch_what_they_are_for() -> None:
    """Each kind of use the Textual checks forbid, planted in a module: each is found."""
    hooks = ledgered_hooks() | UNDOCUMENTED_HOOKS
    planted = ast.parse(
        "import textual._xterm_parser\n"
        "from textual.widgets._footer import FooterKey\n"
        "from textual import _time, events\n"
        "app._batch_count = 0\n"
        "class S:\n"
        "    def _compositor_refresh(self): ...\n"
        "getattr(node, '_bindings', None)\n"
        "screen.screen_layout_refresh_signal.subscribe(w, f)\n"
        "from textual.widgets import Footer\n"
        "self._parser = None\n"
    )
    found = textual_violations(ROOT / "planted.py", planted, hooks)
    assert {line.split(" ", 1)[1] for line in found} == {
        "imports textual._xterm_parser",
        "imports textual.widgets._footer",
        "imports textual._time",
        "touches _batch_count",
        "touches _compositor_refresh",
        "touches screen_layout_refresh_signal",
        "touches _bindings",
    }


def test_the_hooks_come_from_the_ledger() -> None:
    hooks = ledgered_hooks()
    assert {"_compositor_refresh", "_batch_count", "_bindings", "_on_timer_update"} <= hooks
    # Module names (`textual._parser.ParseError`) are for the import check, not hooks.
    assert not {"_parser", "_xterm_parser", "_footer"} & hooks
    # The documented `_on_key` override is named before the ledger, not in it.
    assert "_on_key" not in hooks


def test_every_undocumented_hook_the_check_forbids_is_in_the_ledger() -> None:
    text = " ".join(textual_ledger())
    missing = [hook for hook in sorted(UNDOCUMENTED_HOOKS) if f".{hook}`" not in text]
    assert missing == []


def test_nothing_outside_the_ledger_imports_a_private_textual_module() -> None:
    found = [
        f"{where(path, line)} imports {module}"
        for path in outside_modules()
        for line, module in sorted(private_textual_imports(parse(path)))
    ]
    assert not found, "move it into chatui/_textual/, with a ledger entry:\n" + "\n".join(found)


def test_nothing_outside_the_ledger_touches_a_private_hook_it_lists() -> None:
    hooks = ledgered_hooks() | UNDOCUMENTED_HOOKS
    found = [
        f"{where(path, line)} touches {name}"
        for path in outside_modules()
        for line, name in sorted(names_touched(parse(path)))
        if name in hooks
    ]
    assert not found, "move it into chatui/_textual/, with a ledger entry:\n" + "\n".join(found)


def test_every_ledger_entry_names_modules_that_exist() -> None:
    missing = [
        f"chatui/_textual/{name}.py"
        for entry in textual_ledger()
        for name in leading_names(entry)
        if not (TEXTUAL_PACKAGE / f"{name}.py").is_file()
    ]
    assert missing == []


def test_every_module_of_the_private_package_has_a_ledger_entry() -> None:
    ledgered = {name for entry in textual_ledger() for name in leading_names(entry)}
    modules = {p.stem for p in TEXTUAL_PACKAGE.glob("*.py")} - {"__init__"}
    assert sorted(modules - ledgered) == []


def guarding_tests(entry: str) -> list[tuple[str, str | None]]:
    """The `tests/...py` files (and `::test` names) an entry gives as its guard."""
    return [
        (path, name or None) for path, name in re.findall(r"tests/([\w/]+\.py)(?:::(\w+))?", entry)
    ]


def defines_function(path: Path, name: str) -> bool:
    return any(
        isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == name
        for node in ast.walk(parse(path))
    )


@pytest.mark.parametrize("ledger", ["textual", "llama-cpp-python"])
def test_every_ledger_entry_names_a_guarding_test_that_exists(ledger: str) -> None:
    entries = textual_ledger() if ledger == "textual" else llama_ledger()
    problems = []
    for entry in entries:
        guards = guarding_tests(entry)
        if not guards:
            problems.append(f"no guarding test: {entry[:60]!r}")
        for file, name in guards:
            path = ROOT / "tests" / file
            if not path.is_file():
                problems.append(f"tests/{file} does not exist")
            elif name and not defines_function(path, name):
                problems.append(f"tests/{file} has no {name}")
    assert problems == []


def test_every_textual_ledger_entry_says_what_it_gains_and_what_would_retire_it() -> None:
    problems = [
        entry[:60]
        for entry in textual_ledger()
        if not ("Gain" in entry or "Correctness" in entry) or "Retire:" not in entry
    ]
    assert problems == []


# llama-cpp-python


def llama_cpp_private_names() -> set[str]:
    """Every private name llama-cpp-python's installed source defines."""
    names: set[str] = set()
    for path in Path(llama_cpp.__file__).resolve().parent.rglob("*.py"):
        names |= private_names_defined(parse(path))
    return names


def llama_ledgered() -> set[str]:
    return {name for entry in llama_ledger() for name in leading_names(entry) if is_private(name)}


def test_the_llama_ledger_names_the_version_pin_it_relies_on() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    pin = re.search(r'"llama-cpp-python([<>=!~][^"]*)"', pyproject)
    assert pin, "pyproject.toml no longer pins llama-cpp-python"
    assert f"llama-cpp-python{pin.group(1)}" in docstring(LLAMA_LEDGER).replace("\n", " ")


def test_the_llama_ledger_lists_the_private_names_it_is_known_to_use() -> None:
    ledgered = llama_ledgered()
    assert {"_init_sampler", "_model", "_model_params"} <= ledgered
    # The check sees what it must: these are llama_cpp's, whoever reaches them.
    assert {"_init_sampler", "_model"} <= llama_cpp_private_names()


def test_the_local_provider_uses_no_private_llama_cpp_name_its_ledger_does_not_list() -> None:
    files = sorted(LOCAL.glob("*.py"))
    trees = {path: parse(path) for path in files}
    ours = set().union(*(private_names_defined(tree) for tree in trees.values()))
    theirs = llama_cpp_private_names()
    allowed = llama_ledgered() | (ours - theirs)
    found = [
        f"{where(path, line)} uses {name}"
        for path, tree in trees.items()
        for line, name in private_names_used(tree)
        if name not in allowed
    ]
    found += [
        f"{where(path, node.lineno)} imports {module}"
        for path, tree in trees.items()
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for module in (
            [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
        )
        if module.split(".")[0] == "llama_cpp" and any(map(is_private, module.split(".")))
    ]
    assert not found, "list it in llama_engine.py's ledger, or use public API:\n" + "\n".join(found)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("models") / "tiny.gguf")


def test_llama_samples_through_the_override_that_checks_the_grammar(
    tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`Llama.generate` builds its sampler with `CountingLlama._init_sampler`, tool grammar first.

    Were `Llama` to stop calling it, a `ToolGrammar` would still hold the
    reply (it is a `LlamaGrammar`), but unchecked: only this test would see.
    """
    compiled: list[ToolGrammar] = []
    sampler = ToolGrammar.sampler

    def checked(self: ToolGrammar, vocab: llama_cpp.llama_vocab_p) -> llama_cpp.llama_sampler_p:
        compiled.append(self)
        return sampler(self, vocab)

    monkeypatch.setattr(ToolGrammar, "sampler", checked)
    grammar = ToolGrammar('root ::= "q"')
    llm = llama_engine.CountingLlama(model_path=str(tiny_model), n_ctx=256, verbose=False)
    try:
        reply = llm.generate(llm.tokenize(b"hello", add_bos=False), grammar=grammar)
        first = next(iter(reply))
        reply.close()
        assert compiled == [grammar]
        assert llm.detokenize([first]) == b"q"  # The grammar held the reply.
    finally:
        llm.close()


def test_llama_builds_the_model_params_it_loads_from_through_the_safe_setter(
    tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`CountingLlama.model_params` is set once, by `Llama.__init__`, and kept to the load.

    `Llama.__init__` assigns `self.model_params`, fills it in from its
    arguments and loads the model from it; `safe_model_params` (no AMX
    buffers) must see that object and its change must survive the filling in.
    """
    seen: list[llama_cpp.llama_model_params] = []

    def recording(params: llama_cpp.llama_model_params) -> llama_cpp.llama_model_params:
        seen.append(params)
        params.use_extra_bufts = False  # What it does on a CPU with AMX.
        return params

    monkeypatch.setattr(llama_engine, "safe_model_params", recording)
    llm = llama_engine.CountingLlama(model_path=str(tiny_model), n_ctx=256, verbose=False)
    try:
        assert len(seen) == 1 and llm.model_params is seen[0]
        assert llm.model_params.use_extra_bufts is False
        assert llm.n_ctx() == 256  # Loaded, with a context.
    finally:
        llm.close()


def test_the_llama_check_catches_an_unlisted_private_name() -> None:
    planted = ast.parse("class L(Llama):\n    def f(self):\n        return self._ctx, x._batch\n")
    theirs = llama_cpp_private_names()
    used = {name for _line, name in private_names_used(planted)}
    assert {"_ctx", "_batch"} <= used & theirs
    assert not {"_ctx", "_batch"} & llama_ledgered()


# Code that points outside the repository


def repository_text_files() -> Iterator[Path]:
    for folder in ("chatui", "tests", "bench"):
        for path in sorted((ROOT / folder).rglob("*")):
            if path.is_file() and path.suffix in TEXT_SUFFIXES and "__pycache__" not in path.parts:
                yield path


def test_no_comment_or_docstring_points_at_an_issue_or_a_document_outside_the_repository() -> None:
    found = [
        f"{where(path, number)}: {line.strip()}"
        for path in repository_text_files()
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if OUTSIDE_REFERENCE.search(line)
    ]
    assert not found, "say it in plain words (the contract: docs/cancellation.md):\n" + "\n".join(
        found
    )


def test_the_reference_pattern_finds_what_it_should() -> None:
    # Built from pieces, so that this file does not match itself.
    for text in ("see issue" + " 12", "(defect" + " 4)", "design" + " contract", "Issue" + "-12"):
        assert OUTSIDE_REFERENCE.search(text), text
    for text in ("the issue is", "defective", "the cancellation contract (docs/cancellation.md)"):
        assert not OUTSIDE_REFERENCE.search(text), text
