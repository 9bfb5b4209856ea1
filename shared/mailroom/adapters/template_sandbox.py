"""Jinja2's immutable sandbox, with a byte budget so no single step can run away.

The render deadline (``render_deadline.py``) interrupts template code between
Python bytecodes. It cannot interrupt one long C call, such as
``'x' * 10**10`` or joining a list of ten thousand references to one large
string. This sandbox makes sure no such call exists: every operation a
template can use to make a large value is estimated *before* it runs and
charged to a per-render budget afterwards, and the render stops with
``TemplateTooLarge`` once the budget is spent. So each C call is bounded by the
budget (milliseconds), the deadline interrupts between them, and memory stays
bounded by the budget, not by whatever the template asks for.

Where the costs are checked: intercepted binary operators (``* ** % +``),
``~`` (through the code generator), every call (string methods, macros,
globals), every filter, slicing, ``str.format``, buffer joins (``{% set %}``
blocks, macros, ``{% filter %}``) and every ``{{ output }}`` (``finalize``).
"""

from __future__ import annotations

import functools
import inspect
import re
import string
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from jinja2 import ChainableUndefined, StrictUndefined, nodes
from jinja2.compiler import CodeGenerator, Frame, optimizeconst
from jinja2.exceptions import SecurityError, TemplateRuntimeError, UndefinedError
from jinja2.runtime import Context, LoopContext
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import missing
from markupsafe import Markup

from mailroom.domain.personalization import prop_paths

# Bump when anything here changes the code a template compiles to: compiled
# templates shared through Redis are keyed by it.
SANDBOX_VERSION = "2"

_NUMBERS = frozenset({int, float})
_SCALARS = frozenset({int, float, bool, type(None)})
_POINTER = 8  # bytes a list slot costs; lists are charged by their length
_MAX_INT_BITS = 1 << 16  # ~20,000 digits: money, counts and ids fit; 10**10**6 does not
_PRINTF_SPEC = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")
_DIGITS = re.compile(r"\d+")
_FORMAT_ATTRIBUTE = re.compile(r"\{[^}]*[.\[]_")
# Attributes that lead from a value to Python internals. The sandbox refuses
# them at render time too; finding them in the source refuses the upload.
UNSAFE_ATTRIBUTES = frozenset(
    {"mro", "gi_frame", "gi_code", "cr_frame", "cr_code", "ag_frame", "ag_code"}
    | {"f_globals", "f_locals", "f_builtins", "f_back", "tb_frame", "func_globals"}
    | {"im_func", "im_self", "im_class"}
)
# What getattr() finds on a plain dict: any other name can only be one of its keys.
_DICT_ATTRIBUTES = frozenset(dir(dict))
# The read-only properties of ``loop`` inside a for: numbers, flags and the
# neighbouring items, never a callable; the sandbox's checks would pass them.
_LOOP_FIELDS = frozenset(
    {"index", "index0", "revindex", "revindex0", "first", "last", "length"}
    | {"depth", "depth0", "previtem", "nextitem"}
)
_UNSUPPORTED_TAGS = (nodes.Extends, nodes.Include, nodes.Import, nodes.FromImport)


class TemplateTooLarge(Exception):
    """The render would produce more than its byte budget."""


class UndefinedProp(UndefinedError):
    """StrictUndefined's error, saying which name was missing."""

    def __init__(self, message: str | None = None, *, name: str | None, top_level: bool) -> None:
        super().__init__(message)
        self.name = name
        self.top_level = top_level  # a prop itself, not an attribute of one


class PropUndefined(StrictUndefined):
    """StrictUndefined whose error names the missing prop (for 422 details)."""

    __slots__ = ()

    def __init__(
        self,
        hint: str | None = None,
        obj: Any = missing,
        name: str | None = None,
        exc: type[TemplateRuntimeError] = UndefinedError,
    ) -> None:
        if exc is UndefinedError:  # not the sandbox's SecurityError
            exc = functools.partial(UndefinedProp, name=name, top_level=obj is missing)  # type: ignore[assignment]
        super().__init__(hint, obj, name, exc)


class _Recording(threading.local):
    """What the current thread's inline render found missing (issue 17)."""

    missing: list[str] | None = None
    props: dict[str, Any] | None = None
    paths: dict[int, str] | None = None


_recording = _Recording()


@contextmanager
def recording_missing(props: dict[str, Any], missing: list[str]) -> Iterator[None]:
    """Within: every missing prop an inline render prints is appended to ``missing``."""
    _recording.missing, _recording.props, _recording.paths = missing, props, None
    try:
        yield
    finally:
        _recording.missing = _recording.props = _recording.paths = None


def _path_of_missing(obj: Any, name: Any) -> str:
    """``user.address.city``: the path of the container the render reached, and the name."""
    if obj is missing:
        return str(name)
    if isinstance(obj, RecordingUndefined):
        return f"{obj._missing_path}.{name}"
    paths = _recording.paths
    if paths is None and _recording.props is not None:
        paths = _recording.paths = prop_paths(_recording.props)
    prefix = (paths or {}).get(id(obj))
    return f"{prefix}.{name}" if prefix else str(name)


class RecordingUndefined(ChainableUndefined):
    """Inline content's undefined: printed, it is empty and its path is recorded.

    Attribute and index access chain (``user.address.city`` when ``user`` is
    missing is one missing path, not an error), the ``default`` filter and
    ``is defined`` see an undefined as usual, and anything that cannot be
    empty (arithmetic, comparisons) stops the render naming the path.
    """

    __slots__ = ("_missing_path",)

    def __init__(
        self,
        hint: str | None = None,
        obj: Any = missing,
        name: str | None = None,
        exc: type[TemplateRuntimeError] = UndefinedError,
    ) -> None:
        self._missing_path = _path_of_missing(obj, name) if name is not None else "(value)"
        if exc is UndefinedError:  # not the sandbox's SecurityError
            exc = functools.partial(UndefinedProp, name=self._missing_path, top_level=True)  # type: ignore[assignment]
        super().__init__(hint, obj, name, exc)

    def __getattr__(self, name: str) -> Any:
        if name[:2] == "__":
            raise AttributeError(name)
        return RecordingUndefined(obj=self, name=name)

    def __getitem__(self, key: Any) -> Any:
        return RecordingUndefined(obj=self, name=key)

    def _record(self) -> None:
        found = _recording.missing
        if found is not None and self._missing_path not in found:
            found.append(self._missing_path)

    def __str__(self) -> str:
        self._record()
        return ""

    def __html__(self) -> str:
        return self.__str__()

    def __iter__(self) -> Iterator[Any]:
        self._record()
        return iter(())


class _BudgetedCodeGenerator(CodeGenerator):
    """Routes ``~`` through the environment, so its operands are sized first."""

    @optimizeconst
    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:  # noqa: N802 - Jinja's name
        if frame.eval_ctx.volatile:
            join = "(markup_join if context.eval_ctx.volatile else str_join)"
        elif frame.eval_ctx.autoescape:
            join = "markup_join"
        else:
            join = "str_join"
        self.write(f"environment.join_operands({join}, (")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")

    def pull_dependencies(self, roots: Iterable[nodes.Node]) -> None:
        # Jinja's visitor walks every node for the few filters and tests in
        # them (~2% of a compile, issue 8): hand it only those. It stops at
        # blocks, which pull their own, and so does this walk.
        super().pull_dependencies(_filters_and_tests(roots))


class ByteBudget:
    """Bytes the current render may still produce, per thread (one render per thread).

    One budget is shared by the environments that render the parts of one
    email, so subject, HTML and text draw on the same total.
    """

    def __init__(self, default: int) -> None:
        self.default = default
        self.local = threading.local()  # .remaining while a render runs

    @contextmanager
    def limit(self, total: int) -> Iterator[None]:
        self.local.remaining = total
        try:
            yield
        finally:
            del self.local.remaining

    def remaining(self) -> int:
        try:
            remaining: int = self.local.remaining
        except AttributeError:
            return self.default
        return remaining

    def check(self, estimate: int, what: str) -> None:
        if estimate > self.remaining():
            raise TemplateTooLarge(
                f"{what} would exceed the render budget of {self.default} bytes "
                f"({estimate} more asked)"
            )

    def charge(self, used: int, what: str) -> None:
        local = self.local
        try:
            remaining: int = local.remaining
        except AttributeError:  # outside a render: each step alone is checked
            self.check(used, what)
            return
        if used > remaining:
            self.check(used, what)
        local.remaining = remaining - used


class BudgetedSandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox with StrictUndefined, charging what it makes to a budget."""

    code_generator_class = _BudgetedCodeGenerator
    intercepted_binops = frozenset({"*", "**", "%", "+"})

    def __init__(
        self,
        *,
        autoescape: bool,
        budget: ByteBudget,
        undefined: type[StrictUndefined] | type[ChainableUndefined] = PropUndefined,
    ) -> None:
        # No constant folding: it ran template expressions (filters, calls) at
        # compile time, cost ~10% of a compile (issue 8), and email templates
        # have next to nothing constant to fold; what it would fold runs at
        # render time instead, under the same sandbox, budget and deadline.
        super().__init__(
            autoescape=autoescape,
            undefined=undefined,
            finalize=self._finalize,
            optimized=False,
        )
        self.budget = budget
        self._remaining = budget.remaining
        self._check = budget.check
        self._charge = budget.charge
        self._local = budget.local
        # Email templates stand alone: no loader, so include/import/extends fail.
        self.globals.pop("lipsum", None)
        self.filters = {name: self._budgeted_filter(name, f) for name, f in self.filters.items()}

    # --- hooks Jinja calls --------------------------------------------------

    def _finalize(self, value: Any) -> Any:
        # Runs for every {{ }}: the common case (a string, inside a render)
        # is inlined rather than going through charge().
        kind = type(value)
        if kind is str or kind is Markup:
            local = self._local
            try:
                left = local.remaining - len(value)
            except AttributeError:
                left = -1
            if left < 0:
                self._charge(len(value), "output")
            else:
                local.remaining = left
        elif kind not in (int, float, bool) and value is not None:
            self._charge(deep_size(value, self._remaining()), "output")
        return value

    def concat(self, parts: Iterable[str]) -> str:
        parts = list(parts)
        self._charge(sum(map(len, parts)), "a block")
        return "".join(parts)

    def join_operands(self, join: Callable[[Iterable[Any]], str], operands: tuple[Any, ...]) -> str:
        limit = self._remaining()
        self._charge(sum(deep_size(o, limit) for o in operands), "'~'")
        return join(operands)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        kinds = (type(left), type(right))
        if float in kinds and kinds[0] in _NUMBERS and kinds[1] in _NUMBERS:
            # Float arithmetic is bounded (it overflows to an error instead).
            return super().call_binop(context, operator, left, right)
        if operator == "*":
            self._check_repeat(left, right)
        elif operator == "**":
            self._check_power(left, right)
        elif operator == "%" and isinstance(left, str):
            self._check_printf(left, right)
        elif operator == "+":
            self._check(shallow_size(left) + shallow_size(right), "'+'")
        result = super().call_binop(context, operator, left, right)
        size = shallow_size(result)
        if size:
            self._charge(size, f"'{operator}'")
        return result

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        owner = getattr(__obj, "__self__", None)
        if isinstance(owner, str | bytes):
            args = __self._check_string_method(owner, getattr(__obj, "__name__", ""), args)
        elif isinstance(owner, int) and getattr(__obj, "__name__", "") == "to_bytes":
            __self._check(int(args[0]) if args else 0, "int.to_bytes")
        result = super().call(__context, __obj, *args, **kwargs)
        __self._charge(shallow_size(result), "a call")
        return result

    def getattr(self, obj: Any, attribute: str) -> Any:
        # Props are JSON, so ``item.name`` is nearly always a key of a plain
        # dict, which Jinja reaches only after getattr() has raised
        # AttributeError (1-2 µs, ~230 times a receipt: issue 8). A name that
        # is no dict attribute can only be a key, so look it up directly;
        # everything else (attributes, misses, other types) goes the sandbox's way.
        if type(obj) is dict and type(attribute) is str and attribute not in _DICT_ATTRIBUTES:
            try:
                return obj[attribute]
            except KeyError:
                pass
        elif type(obj) is LoopContext and attribute in _LOOP_FIELDS:
            # ``loop.index`` and the like: the sandbox's internal-attribute
            # and mutation checks cost ~5 µs each time and cannot refuse these.
            return getattr(obj, attribute)
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        if isinstance(argument, slice):
            self._check(shallow_size(obj), "a slice")
            result = super().getitem(obj, argument)
            self._charge(shallow_size(result), "a slice")
            return result
        return super().getitem(obj, argument)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        formatter = super().wrap_str_format(value)
        if formatter is None:
            return None
        for _, _, spec, _ in string.Formatter().parse(value.__self__):
            if spec and "{" in spec:
                raise SecurityError("format specs taken from arguments are not allowed")
            for digits in _DIGITS.findall(spec or ""):
                self._check(int(digits), "a format width")

        def budgeted(*args: Any, **kwargs: Any) -> str:
            limit = self._remaining()
            self._check(sum(deep_size(a, limit) for a in (*args, *kwargs.values())), "format")
            result = formatter(*args, **kwargs)
            self._charge(len(result), "format")
            return result

        return budgeted

    # --- estimates ------------------------------------------------------------

    def _check_repeat(self, left: Any, right: Any) -> None:
        if isinstance(left, int) and isinstance(right, int):
            if left.bit_length() + right.bit_length() > _MAX_INT_BITS:
                raise TemplateTooLarge("integer product too large")
            return
        sequence, times = (left, right) if isinstance(right, int) else (right, left)
        if isinstance(times, int) and not isinstance(times, bool):
            self._check(shallow_size(sequence) * max(times, 0), "'*'")

    def _check_power(self, base: Any, exponent: Any) -> None:
        if (
            isinstance(base, int)
            and isinstance(exponent, int)
            and abs(base) > 1
            and base.bit_length() * max(exponent, 0) > _MAX_INT_BITS
        ):
            raise TemplateTooLarge("integer power too large")

    def _check_printf(self, template: str, values: Any) -> None:
        self._check(_printf_estimate(template, values, self._remaining()), "%-formatting")

    def _check_string_method(
        self, owner: str | bytes, name: str, args: tuple[Any, ...]
    ) -> tuple[Any, ...]:
        if name in ("center", "ljust", "rjust", "zfill") and args:
            self._check(int(args[0]), f"str.{name}")
        elif name == "expandtabs":
            tabs = owner.count("\t") if isinstance(owner, str) else owner.count(b"\t")
            self._check(len(owner) + tabs * (int(args[0]) if args else 8), "str.expandtabs")
        elif name == "replace" and len(args) >= 2:
            self._check(_replace_estimate(owner, args[0], args[1]), "str.replace")
        elif name == "join" and args:
            items = list(args[0])
            limit = self._remaining()
            self._check(
                sum(deep_size(item, limit) for item in items) + len(owner) * len(items), "str.join"
            )
            return (items, *args[1:])
        elif name in ("split", "rsplit", "splitlines", "partition", "rpartition"):
            self._check(len(owner) * _POINTER, f"str.{name}")
        elif name in ("translate", "maketrans"):
            raise SecurityError(f"str.{name} is not available in templates")
        return args

    # --- filters -------------------------------------------------------------

    def _budgeted_filter(self, name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        offset = 1 if getattr(function, "jinja_pass_arg", None) is not None else 0
        signature = inspect.signature(function)
        # Jinja's async-capable filters take an eval context their signature omits.
        first = next(iter(signature.parameters), "")
        unnamed = offset if first not in ("environment", "eval_ctx", "context") else 0
        estimate = _FILTER_ESTIMATES.get(name)
        # Filters that stringify their input (a nested list's str() is one C
        # call) may not start from more than the budget; the rest (length,
        # first, map...) only look at it.
        stringifies = name in _STRINGIFYING_FILTERS
        printf = name == "format"  # the common one: sized without binding its signature

        @functools.wraps(function)
        def budgeted(*args: Any, **kwargs: Any) -> Any:
            if stringifies or estimate is not None or printf:
                limit = self._remaining()
                value = args[offset] if len(args) > offset else None
                if stringifies and not isinstance(value, str | int | float | bool | None):
                    self._check(deep_size(value, limit), f"|{name}")
                if printf:
                    values = (*args[offset + 1 :], *kwargs.values())
                    self._check(_printf_estimate(value, values, limit), "|format")
                elif estimate is not None:
                    bound = signature.bind(*args[unnamed:], **kwargs)
                    bound.apply_defaults()
                    if name == "join":  # materialised here, so it is sized before joining
                        bound.arguments["value"] = list(bound.arguments["value"])
                        args, kwargs = (*args[:unnamed], *bound.args), bound.kwargs
                    self._check(estimate(bound.arguments, limit), f"|{name}")
            result = function(*args, **kwargs)
            size = shallow_size(result)
            if size:
                self._charge(size, f"|{name}")
            return result

        return budgeted


def deep_size(value: Any, limit: int) -> int:
    """Bytes ``str(value)`` is about to need; stops counting past ``limit``."""
    total = 0
    pending = [value]
    while pending and total <= limit:
        item = pending.pop()
        if isinstance(item, str | bytes):
            total += len(item)
        elif isinstance(item, list | tuple | set | frozenset):
            total += _POINTER * len(item)
            pending.extend(item)
        elif isinstance(item, dict):
            total += 2 * _POINTER * len(item)
            pending.extend(item.keys())
            pending.extend(item.values())
        else:
            total += _POINTER
    return total


def shallow_size(value: Any) -> int:
    if isinstance(value, str | bytes):
        return len(value)
    if isinstance(value, list | tuple | set | frozenset | dict):
        return _POINTER * len(value)
    return 0


def _replace_estimate(text: Any, old: Any, new: Any) -> int:
    if not isinstance(text, str | bytes) or not isinstance(new, str | bytes):
        return 0
    hits = len(text) + 1 if not old else text.count(old)
    return len(text) + hits * len(new)


def _str_length(value: Any) -> int:
    return len(value) if isinstance(value, str) else 0


def _text(arguments: dict[str, Any], key: str) -> str:
    value = arguments.get(key)
    return value if isinstance(value, str) else str(value or "")


_STRINGIFYING_FILTERS = frozenset(
    {"string", "e", "escape", "forceescape", "safe", "upper", "lower", "title", "capitalize"}
    | {"trim", "striptags", "wordcount", "urlencode", "urlize", "truncate", "pprint", "xmlattr"}
    | {"center", "indent", "wordwrap", "replace", "format", "tojson"}
)

_FILTER_ESTIMATES: dict[str, Callable[[dict[str, Any], int], int]] = {
    "center": lambda a, _: max(len(_text(a, "value")), int(a["width"])),
    "indent": lambda a, _: (
        len(_text(a, "s"))
        + (_text(a, "s").count("\n") + 1)
        * (a["width"] if isinstance(a["width"], int) else len(str(a["width"])))
    ),
    "wordwrap": lambda a, _: (
        len(_text(a, "s")) * (1 + len(a["wrapstring"] or "\n") // max(int(a["width"]), 1))
    ),
    "replace": lambda a, _: _replace_estimate(_text(a, "s"), a["old"], a["new"]),
    "join": lambda a, limit: (
        sum(deep_size(v, limit) for v in a["value"]) + len(str(a["d"])) * len(a["value"])
    ),
    "batch": lambda a, _: _POINTER * int(a["linecount"]),
    "slice": lambda a, _: 8 * _POINTER * int(a["slices"]),
    "tojson": lambda a, limit: deep_size(a["value"], limit) * (1 + int(a["indent"] or 0)),
    "list": lambda a, _: _POINTER * _str_length(a["value"]),
    "sort": lambda a, _: _POINTER * _str_length(a["value"]),
    "unique": lambda a, _: _POINTER * _str_length(a["value"]),
    "sum": lambda a, _: 0 if isinstance(a["start"], int | float) else 1 << 62,
}


def _printf_estimate(template: Any, values: Any, limit: int) -> int:
    """Bytes ``template % values`` may need; '*' widths come from values, so they are refused."""
    if not isinstance(template, str):
        return 0
    if isinstance(values, tuple) and all(type(v) in _SCALARS for v in values):
        return len(template) + _printf_widths(template) + _POINTER * len(values)
    return len(template) + _printf_widths(template) + deep_size(values, limit)


@functools.lru_cache(maxsize=1024)
def _printf_widths(template: str) -> int:
    total = 0
    for width, precision in _PRINTF_SPEC.findall(template):
        if "*" in (width, precision):
            raise SecurityError("'*' widths in %-formatting are not allowed")
        total += int(width or 0) + int(precision or 0)
    return total


def descendants(ast: nodes.Node) -> list[nodes.Node]:
    """Every node below ``ast``, in the order ``find_all`` yields them.

    One pass with a stack: ``find_all`` is a recursive generator per node, and
    the static checks and the code generator each walked the tree with it.
    """
    found: list[nodes.Node] = []
    pending = _children(ast)
    while pending:
        node = pending.pop()
        found.append(node)
        pending.extend(_children(node))
    return found


def _children(node: nodes.Node) -> list[nodes.Node]:
    """``node.iter_child_nodes()``, last child first (ready for a stack)."""
    children: list[nodes.Node] = []
    for field in node.fields:
        value = getattr(node, field, None)
        if isinstance(value, list):
            children.extend(item for item in value if isinstance(item, nodes.Node))
        elif isinstance(value, nodes.Node):
            children.append(value)
    children.reverse()
    return children


def _filters_and_tests(roots: Iterable[nodes.Node]) -> list[nodes.Node]:
    found: list[nodes.Node] = []
    pending = list(roots)
    while pending:
        node = pending.pop()
        if isinstance(node, nodes.Block):
            continue
        if isinstance(node, nodes.Filter | nodes.Test):
            found.append(node)
        pending.extend(_children(node))
    return found


@contextmanager
def finds_answered_from(ast: nodes.Template, below: list[nodes.Node]) -> Iterator[None]:
    """``ast.find``/``find_all`` answered from ``below`` (``descendants(ast)``).

    Jinja's code generator (3.1) starts by walking the whole tree three times
    (extends, blocks, imports: ~8% of a compile, issue 8), for nodes the
    static checks have just listed. The list is only right for the tree as
    parsed: the generator asks before it visits anything. The compiled code
    is checked against Jinja's own in tests/unit/test_template_compile.py.
    """

    def find_all(kinds: type[nodes.Node] | tuple[type[nodes.Node], ...]) -> Iterator[Any]:
        return iter([node for node in below if isinstance(node, kinds)])

    # In the instance's dict, it shadows the method; Node.find asks find_all too.
    vars(ast)["find_all"] = find_all
    try:
        yield
    finally:
        del vars(ast)["find_all"]


def unsafe_accesses(
    ast: nodes.Node, below: list[nodes.Node] | None = None
) -> list[tuple[int, str]]:
    """(line, what) for every statically visible way out of the sandbox.

    ``below`` is ``descendants(ast)``, when the caller has it already.
    """
    found: list[tuple[int, str]] = []
    for node in descendants(ast) if below is None else below:
        name: Any = None
        if isinstance(node, nodes.Getattr):
            name = node.attr
        elif isinstance(node, nodes.Getitem):
            if not isinstance(node.arg, nodes.Const):
                continue
            name = node.arg.value
        elif isinstance(node, nodes.Filter):
            if node.name != "attr" or not node.args:
                continue
            first = node.args[0]
            name = first.value if isinstance(first, nodes.Const) else None
        elif isinstance(node, nodes.Const):
            # "{0.__class__}".format(...) walks attributes inside a string.
            if isinstance(node.value, str) and _FORMAT_ATTRIBUTE.search(node.value):
                found.append((node.lineno, f"format string {node.value!r}"))
            continue
        else:
            continue
        if isinstance(name, str) and (name.startswith("_") or name in UNSAFE_ATTRIBUTES):
            found.append((node.lineno, f"attribute '{name}'"))
    return found


def unsupported_tags(
    ast: nodes.Node, below: list[nodes.Node] | None = None
) -> list[tuple[int, str]]:
    """Tags that need other templates: an email template stands alone.

    ``below`` is ``descendants(ast)``, when the caller has it already.
    """
    return [
        (node.lineno, type(node).__name__.lower())
        for node in (descendants(ast) if below is None else below)
        if isinstance(node, _UNSUPPORTED_TAGS)
    ]
