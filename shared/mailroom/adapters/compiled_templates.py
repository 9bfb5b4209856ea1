"""Compiled templates: an in-process LRU, a shared store, and single-flight compiles.

A template is compiled once per content hash across every instance: the
instance that misses both caches takes a lock in the shared store (Redis)
for that hash, compiles, publishes the code and releases the lock; the others
poll for the published code. A holder that dies leaves a lock that expires,
and a waiter past its bounded wait compiles by itself, so nobody waits for
ever. If the shared store is down, every instance compiles for itself.

Marshalled code is executed when it is loaded, so whoever can write to the
shared store could run code in every instance. Each blob is therefore sealed
with an HMAC-SHA256 (a key from configuration) over the key it is stored
under and the code, and checked before it is unmarshalled: a blob with a
wrong, missing or foreign signature, or moved from another template's key, is
never loaded; the template is compiled from its source and published again.
"""

from __future__ import annotations

import abc
import hashlib
import hmac
import json
import marshal
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from types import CodeType

import jinja2
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import (
    AmazonCloudWatchEMFProvider,
)
from jinja2 import ChainableUndefined, StrictUndefined, Template, TemplateSyntaxError

from mailroom.adapters.render_deadline import DeadlineExceeded, DeadlineWatchdog
from mailroom.adapters.template_sandbox import (
    SANDBOX_VERSION,
    BudgetedSandbox,
    ByteBudget,
    PropUndefined,
    TemplateTooLarge,
    descendants,
    finds_answered_from,
    unsafe_accesses,
    unsupported_tags,
)
from mailroom.domain.errors import (
    DependencyUnavailable,
    InvalidTemplate,
    RenderTimeout,
    RenderTooLarge,
    TemplateSecurityError,
)
from mailroom.domain.personalization import translate_defaults
from mailroom.domain.templates import TemplateSource
from mailroom.entrypoints.observability import logger

# Marshalled code is only valid for the Python and Jinja that made it, and for
# our code generator: all three are part of every shared key. "sealed" keeps
# signed blobs apart from the unsigned ones of releases before issue 14, so
# that during a rolling deploy neither release reads the other's entries
# (the old one would hand a sealed blob to marshal as it is).
ENGINE_TAG = (
    f"{sys.implementation.cache_tag}-jinja{jinja2.__version__}-sandbox{SANDBOX_VERSION}-sealed"
)
PARTS = ("subject", "html", "text")


@dataclass(frozen=True, slots=True)
class CompiledTemplate:
    subject: Template
    html: Template
    text: Template | None


def template_key(source: TemplateSource) -> str:
    """The content hash compiled code is keyed by: an edit is a new key."""
    parts = json.dumps([source.subject, source.html, source.text]).encode()
    # Inline content compiles its ``|'default'`` shorthand: its code is not a
    # template's of the same text (issue 17).
    kind = "inline:" if source.inline else ""
    return f"{ENGINE_TAG}:{kind}{hashlib.sha256(parts).hexdigest()}"


MIN_SIGNING_KEY_BYTES = 32
_SEAL_TAG = b"mr-sealed-1:"
_SEALED_HEADER = len(_SEAL_TAG) + hashlib.sha256().digest_size
# Separates these MACs from any other use an operator might make of the key.
_MAC_CONTEXT = b"mailroom-template-code\0"


class CodeSigner:
    """Seals marshalled code for the shared store and checks seals before loading.

    A sealed blob is ``_SEAL_TAG``, the HMAC-SHA256 and the code. The MAC
    covers the key the blob is stored under (the template's content hash, with
    the engine tag), so a valid blob copied under another template's key does
    not verify there. One HMAC over a few KB costs microseconds, and only when
    the in-process LRU misses.
    """

    def __init__(self, key: bytes) -> None:
        if len(key) < MIN_SIGNING_KEY_BYTES:
            raise ValueError(f"a template code signing key has {MIN_SIGNING_KEY_BYTES}+ bytes")
        self._key = key

    def seal(self, name: str, code: bytes) -> bytes:
        return _SEAL_TAG + self._mac(name, code) + code

    def open(self, name: str, blob: bytes) -> bytes | None:
        """The code, if ``blob`` was sealed with our key under ``name``; None otherwise."""
        if len(blob) < _SEALED_HEADER or not blob.startswith(_SEAL_TAG):
            return None
        mac = blob[len(_SEAL_TAG) : _SEALED_HEADER]
        code = blob[_SEALED_HEADER:]
        return code if hmac.compare_digest(mac, self._mac(name, code)) else None

    def _mac(self, name: str, code: bytes) -> bytes:
        # The names hold no NUL, so the parts cannot be shifted into each other.
        return hmac.digest(self._key, _MAC_CONTEXT + name.encode() + b"\0" + code, "sha256")


class SharedTemplateCode(abc.ABC):
    """Compiled code shared between instances, and the lock for compiling it.

    Implementations raise DependencyUnavailable when the store cannot be reached.
    """

    @abc.abstractmethod
    def get(self, key: str) -> bytes | None: ...

    @abc.abstractmethod
    def put(self, key: str, code: bytes, *, ttl_seconds: int) -> None: ...

    @abc.abstractmethod
    def try_lock(self, key: str, *, ttl_seconds: float) -> str | None:
        """A token if this caller now holds the compile lock for ``key``, else None."""

    @abc.abstractmethod
    def unlock(self, key: str, token: str) -> None:
        """Release the lock if ``token`` still holds it (never someone else's)."""


class TemplateMetrics:
    """Counts compiles in process; subclasses also publish them."""

    def __init__(self) -> None:
        self.compiles = 0
        self._lock = threading.Lock()

    def compiled(self, name: str, seconds: float) -> None:
        with self._lock:
            self.compiles += 1


class EmfTemplateMetrics(TemplateMetrics):
    """Each compile as a CloudWatch EMF metric (POWERTOOLS_METRICS_DISABLED silences it)."""

    def __init__(self, namespace: str) -> None:
        super().__init__()
        self._namespace = namespace

    def compiled(self, name: str, seconds: float) -> None:
        super().compiled(name, seconds)
        metrics = AmazonCloudWatchEMFProvider(namespace=self._namespace)
        metrics.add_metric(name="template_compiles", unit=MetricUnit.Count, value=1)
        metrics.add_metadata(key="template", value=name)
        metrics.add_metadata(key="compile_ms", value=round(seconds * 1000, 2))
        metrics.flush_metrics()


class TemplateCompiler:
    """Source to marshalled code and back, in two budgeted sandboxes.

    HTML is compiled with autoescaping; subject and text are not HTML, so
    escaping them would show ``&amp;``.
    """

    def __init__(
        self,
        watchdog: DeadlineWatchdog,
        *,
        timeout_seconds: float,
        budget_bytes: int,
        budget: ByteBudget | None = None,
        undefined: type[StrictUndefined] | type[ChainableUndefined] = PropUndefined,
    ) -> None:
        self.watchdog = watchdog
        self.timeout_seconds = timeout_seconds
        # Inline content's compiler shares the templates' budget (one render
        # per thread either way) and differs only by what is undefined.
        self.budget = budget or ByteBudget(budget_bytes)
        self.html_env = BudgetedSandbox(autoescape=True, budget=self.budget, undefined=undefined)
        self.text_env = BudgetedSandbox(autoescape=False, budget=self.budget, undefined=undefined)

    def environment(self, part: str) -> BudgetedSandbox:
        return self.html_env if part == "html" else self.text_env

    def compile(self, source: TemplateSource) -> bytes:
        """Marshalled code for the three parts; InvalidTemplate, TemplateSecurityError."""
        try:
            codes = self.watchdog.run(self.timeout_seconds, lambda: self._compile_parts(source))
        except DeadlineExceeded as error:
            raise RenderTimeout(f"template '{source.name}' took too long to compile") from error
        except TemplateTooLarge as error:
            raise RenderTooLarge(f"template '{source.name}': {error}") from error
        except RecursionError as error:
            raise InvalidTemplate(f"template '{source.name}' is nested too deeply") from error
        return marshal.dumps(codes)

    def _compile_parts(self, source: TemplateSource) -> tuple[CodeType | None, ...]:
        codes: list[CodeType | None] = []
        # Code generation formats constant output ({{ "x" }}) through finalize,
        # which charges the budget.
        with self.budget.limit(self.budget.default):
            for part in PARTS:
                text = getattr(source, part)
                if text is None:
                    codes.append(None)
                    continue
                env = self.environment(part)
                try:
                    if source.inline:
                        text = translate_defaults(text, list(env.lex(text, name=part)))
                    ast = env.parse(text, name=part)
                except TemplateSyntaxError as error:
                    raise InvalidTemplate(
                        f"template '{source.name}', {part} line {error.lineno}: {error.message}",
                        details=[{"field": part, "line": error.lineno, "message": error.message}],
                    ) from error
                # One walk of the parsed tree serves both checks and the code
                # generator's first questions; the tree is parsed once.
                below = descendants(ast)
                unsafe = unsafe_accesses(ast, below)
                _refuse(source.name, part, unsafe, TemplateSecurityError, "unsafe")
                unsupported = unsupported_tags(ast, below)
                _refuse(source.name, part, unsupported, InvalidTemplate, "unsupported")
                with finds_answered_from(ast, below):
                    try:
                        codes.append(env.compile(ast, name=part, filename=f"<{part}>"))
                    except SyntaxError as error:
                        # Jinja's generated Python hit a limit of Python's
                        # compiler (100 nested {% if %}: "too many levels of
                        # indentation"; 20 nested {% for %}: "too many
                        # statically nested blocks"): the template's doing.
                        raise InvalidTemplate(
                            f"template '{source.name}', {part}: nested too deeply ({error.msg})",
                            details=[{"field": part, "message": f"nested too deeply: {error.msg}"}],
                        ) from error
        return tuple(codes)

    def load(self, code: bytes) -> CompiledTemplate:
        subject, html, text = marshal.loads(code)  # noqa: S302 - ours: compiled here or its seal checked
        return CompiledTemplate(
            subject=self._template("subject", subject),
            html=self._template("html", html),
            text=self._template("text", text) if text is not None else None,
        )

    def _template(self, part: str, code: object) -> Template:
        env = self.environment(part)
        # A plain dict, not Jinja's ChainMap over the environment's globals:
        # every render copies them, and copying a ChainMap iterates it in
        # Python (~10% of a warm render, issue 8). Nothing adds globals to
        # these environments after they are built.
        template_globals = dict(env.make_globals(None))
        return env.template_class.from_code(env, code, template_globals)  # type: ignore[arg-type]


def _refuse(
    name: str,
    part: str,
    found: list[tuple[int, str]],
    error: Callable[..., Exception],
    kind: str,
) -> None:
    if found:
        line, what = found[0]
        raise error(
            f"template '{name}', {part} line {line}: {kind} {what}",
            details=[{"field": part, "line": n, "message": f"{kind} {w}"} for n, w in found],
        )


class CompiledTemplateStore:
    """The three levels: this process's LRU, the shared store, compiling."""

    def __init__(
        self,
        compiler: TemplateCompiler,
        shared: SharedTemplateCode | None,
        metrics: TemplateMetrics,
        *,
        signer: CodeSigner | None = None,
        size: int,
        ttl_seconds: int,
        poll_seconds: float = 0.005,
    ) -> None:
        if shared is not None and signer is None:
            # Unsigned code from a shared store would run whatever was written there.
            raise ValueError("a shared template code store needs a signing key")
        self.compiler = compiler
        self.metrics = metrics
        self._shared = shared
        self._signer = signer
        self._size = size
        self._ttl_seconds = ttl_seconds
        self._poll_seconds = poll_seconds
        # The lock outlives a healthy compile; a dead holder's expires after it.
        self._lock_ttl = compiler.timeout_seconds + 1.0
        # A waiter gives up waiting once a dead holder's lock has expired and
        # its successor had time to compile.
        self._wait_seconds = self._lock_ttl + compiler.timeout_seconds
        self._cache: OrderedDict[str, CompiledTemplate] = OrderedDict()
        self._cache_lock = threading.Lock()
        # Keys of the sources seen last, by identity: a file template is the
        # same frozen object until its files change, and hashing its ~10 KB
        # again was ~3% of a warm render (issue 8). Holding the source keeps
        # its id from being reused by another object.
        self._keys: dict[int, tuple[TemplateSource, str]] = {}

    def get(self, source: TemplateSource) -> CompiledTemplate:
        key = self._key(source)
        with self._cache_lock:
            compiled = self._cache.get(key)
            if compiled is not None:
                self._cache.move_to_end(key)
                return compiled
        compiled = self.compiler.load(self._shared_code(source, key))
        with self._cache_lock:
            self._cache[key] = compiled
            while len(self._cache) > self._size:
                self._cache.popitem(last=False)
        return compiled

    def _key(self, source: TemplateSource) -> str:
        known = self._keys.get(id(source))
        if known is not None and known[0] is source:
            return known[1]
        key = template_key(source)
        with self._cache_lock:
            self._keys[id(source)] = (source, key)
            if len(self._keys) > self._size:
                del self._keys[next(iter(self._keys))]
        return key

    def _shared_code(self, source: TemplateSource, key: str) -> bytes:
        if self._shared is None:
            return self._compile(source)
        try:
            return self._single_flight(source, key)
        except DependencyUnavailable as error:
            # Mail still goes out while Redis is down; each instance compiles.
            logger.warning(
                "shared template store unavailable, compiling here",
                extra={"template": source.name, "error": error.message},
            )
            return self._compile(source)

    def _single_flight(self, source: TemplateSource, key: str) -> bytes:
        assert self._shared is not None
        assert self._signer is not None
        give_up = time.monotonic() + self._wait_seconds
        refused: list[str] = []
        while True:
            code = self._verified(source, key, refused)
            if code is not None:
                return code
            token = self._shared.try_lock(key, ttl_seconds=self._lock_ttl)
            if token is not None:
                try:
                    # The previous holder may have published just before we locked.
                    code = self._verified(source, key, refused)
                    if code is None:
                        code = self._compile(source)
                        sealed = self._signer.seal(key, code)
                        self._shared.put(key, sealed, ttl_seconds=self._ttl_seconds)
                    return code
                finally:
                    self._unlock(key, token)
            if time.monotonic() >= give_up:
                logger.warning(
                    "gave up waiting for a compile lock", extra={"template": source.name}
                )
                return self._compile(source)
            time.sleep(self._poll_seconds)

    def _verified(self, source: TemplateSource, key: str, refused: list[str]) -> bytes | None:
        """The shared code for ``key`` if its seal holds; None if absent or refused."""
        assert self._shared is not None
        assert self._signer is not None
        blob = self._shared.get(key)
        if blob is None:
            return None
        code = self._signer.open(key, blob)
        if code is None and not refused:
            # Once per lookup: a waiter polls the same bad blob until it is replaced.
            refused.append(key)
            logger.warning(
                "compiled template code in the shared store failed its signature check; "
                "compiling from source instead",
                extra={"template": source.name, "key": key},
            )
        return code

    def _unlock(self, key: str, token: str) -> None:
        assert self._shared is not None
        try:
            self._shared.unlock(key, token)
        except DependencyUnavailable:
            # The lock expires by itself; the code is ours either way.
            logger.warning("could not release a template compile lock", extra={"key": key})

    def _compile(self, source: TemplateSource) -> bytes:
        started = time.perf_counter()
        code = self.compiler.compile(source)
        self.metrics.compiled(source.name, time.perf_counter() - started)
        return code
