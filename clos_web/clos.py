"""Generic functions as in CLOS: ``defgeneric``, ``defmethod``, standard method combination.

Declare a generic once, with its docstring; add methods where the classes live::

    from clos_web.clos import generic, call_next_method

    @generic
    def area(shape):
        \"\"\"The area of a shape.\"\"\"          # the body is only the docstring

    @area.dispatch                            # a primary method (defmethod)
    def area_of_square(shape: Square):
        return shape.side ** 2

    @area.before                              # :before, :after and :around methods
    def check(shape: Shape):
        if shape.frozen:
            raise ValueError("frozen")

    @area.around
    def timed(shape: object):
        start = time.perf_counter()
        value = call_next_method()
        metrics.observe(time.perf_counter() - start)
        return value

``@gf.dispatch`` (and ``before``/``after``/``around``) returns the function itself, so it can
be called directly, tested, and given to ``gf.remove_method``. A method therefore needs a name
of its own: one named like the generic (plum's habit, ``@area.dispatch def area(...)``) is
refused with an error saying so, since it would rebind ``area`` to that one method.
``gf.methods`` lists the :class:`Method` records, ``gf.resolve(*args)`` returns the effective
method, ``gf.generation`` counts changes of the
method table, :func:`describe` prints it all, and ``gf.__generic__`` is the state behind it.

**Standard method combination**, exactly CLOS's: the around methods run most specific first,
each wrapping the rest through :func:`call_next_method`; inside the innermost one, every before
method runs (most specific first), then the most specific primary method (which may call the
next primary with ``call_next_method()``, or ``call_next_method(a, b)`` with new arguments),
then every after method (least specific first). The value is the primary's, or the outermost
around's. :func:`next_method_p` says whether there is a next method. No applicable primary
method (before/after/around methods alone do not count) raises :class:`NoApplicableMethod`;
``call_next_method()`` without a next method raises :class:`NoNextMethod`. Before and after
methods have no next method: one that names ``call_next_method`` is refused at registration.

**Specificity** is CLOS's class precedence, left argument first: applicable methods are sorted
lexicographically by, for each argument from the left, the rank of the method's specializer
for that argument (lower is more specific):

* a class ``S`` (and an unannotated parameter, which is ``object``): the position of ``S`` in
  ``type(arg).__mro__``. A class that applies without being in the MRO (an ABC the argument's
  class is registered with, or matches by ``__subclasshook__``) ranks after every class of the
  MRO except ``object``.
* ``None`` is ``NoneType``.
* ``type[X]`` applies to an argument that is itself a class with ``issubclass(arg, X)``; it
  ranks by the position of ``X`` in ``arg.__mro__`` and before any class specializer (even
  ``type`` or ``object``, which rank by the position in the metaclass's MRO).
* a union (``dict | list``, ``int | None``, ``type[int] | type[float]``) ranks as its
  best-ranked member that applies.
* anything else plum (beartype) can check but that is not a plain class -- ``Literal[...]``,
  ``list[int]``, a runtime protocol, any class plum deems not *faithful* -- ranks before every
  class specializer (it constrains the instance, not only its class). Calls to which such a
  method may apply are not cached: they are resolved on every call (correct, slower).

Ties between different specializers of equal rank (``int | str`` and ``int`` for an ``int``;
two ABCs) are broken by plum's signature order (``plum.Signature.__le__``: ``int`` before
``int | str``), then by registration order.

**plum** checks applicability (``Signature.match``), compares signatures (a method registered
again with the same qualifier and an equal ``Signature`` replaces the old one, so redefining a
method at the REPL never stacks duplicates) and orders ties. A generic has a fixed number of
positional parameters, taken from its declaration; a method with another number is refused.
Keyword arguments are not dispatched on: the discriminating function has the declaration's
parameter names, so ``write(obj=x, conn=c)`` binds them by name, and nothing else is accepted.
Return annotations are ignored (never converted to).

**The discriminating function.** The generic *is* a small generated function (as attrs
generates ``__init__``): it looks the effective method up in a per-generic cache by the classes
of the arguments that some method specialises -- one nested dict level per such position, so
with one position the key is that argument's class; at a position with a ``type[X]``
specializer a class argument keys by the class itself -- and calls it. The cache is filled on
the first call with new argument classes, replaced whenever a method is added or removed (the
function's code is regenerated when the specialised positions change), and cleared when it
holds :data:`CACHE_LIMIT` entries. When the effective method is one primary method that never
calls ``call_next_method``/``next_method_p`` and no qualified method applies, the cache entry
is the method itself: a cached call is a dict lookup and the call (about 0.06-0.14 µs more than
calling the method directly here; plum's cached call costs 0.5-0.9 µs more). Before and after
methods are called from generated code (about 0.08 µs). A method that calls
``call_next_method`` pushes a frame on a thread-local stack, and ``call_next_method`` checks
that its caller is that method's body: about 0.6 µs per ``call_next_method``. See
``bench/dispatch_bench.py``.

Registration takes a lock and swaps in a new method table and a new cache at once, so another
thread (the loop, while a REPL adds a method) never sees a half-built table.

Limitations: ``call_next_method`` must be called while its method runs (from its body or a
function nested in it), not from a generator or coroutine the method returns. Methods are
recognised as calling it when their code (or code nested in it) names ``call_next_method`` or
``next_method_p``, or a global or closure variable bound to them. Changing a class's
``__bases__`` after calls were cached is not noticed.
"""

from __future__ import annotations

import builtins
import dis
import functools
import inspect
import itertools
import linecache
import sys
import threading
import types
import typing
from collections.abc import Callable

import attrs
from beartype.roar import BeartypeCallHintForwardRefException as BeartypeForwardRef
from plum import Signature, is_faithful, resolve_type_hint

__all__ = [
    "generic", "call_next_method", "next_method_p", "describe", "is_generic", "Method",
    "GenericError", "NoApplicableMethod", "NoNextMethod", "CACHE_LIMIT",
]

CACHE_LIMIT = 4096
"""The most entries a generic's cache holds; past it the cache is cleared and refilled."""

PRIMARY, BEFORE, AFTER, AROUND = "primary", "before", "after", "around"
_QUALIFIERS = (AROUND, BEFORE, PRIMARY, AFTER)  # the order describe() lists them in


# --------------------------------------------------------------------------------------------
# Errors


class _ForwardReference(Exception):
    """A method's annotation names a class that does not exist yet."""


def _check_resolvable(hint) -> None:
    """Raise (beartype's forward-reference error) if ``hint`` names a class not defined yet:
    beartype stands a proxy class in for it, which resolves on a subclass check."""
    if isinstance(hint, type):
        issubclass(object, hint)
    for arg in typing.get_args(hint):
        _check_resolvable(arg)


class GenericError(TypeError):
    """A call to a generic function found no method to run."""


class NoApplicableMethod(GenericError):
    """No primary method applies to the arguments.

    >>> area(Circle())  # doctest: +SKIP
    NoApplicableMethod: no applicable method for area(Circle)
    """

    def __init__(self, name: str, args: tuple, qualified: bool = False):
        self.generic = name
        self.classes = tuple(_arg_class(a) for a in args)
        message = f"no applicable method for {name}({', '.join(self.classes)})"
        if qualified:
            message += " (before/after/around methods apply, but no primary method)"
        super().__init__(message)


class NoNextMethod(GenericError):
    """``call_next_method()`` was called by the least specific method."""

    def __init__(self, name: str, method: Method, args: tuple):
        self.generic = name
        self.classes = tuple(_arg_class(a) for a in args)
        super().__init__(
            f"no next method: {method.name} ({method.qualifier}) called call_next_method() "
            f"but is the least specific {method.qualifier} method of "
            f"{name}({', '.join(self.classes)})")


def _arg_class(arg) -> str:
    if isinstance(arg, type):
        return f"type[{arg.__qualname__}]"
    return type(arg).__qualname__


# --------------------------------------------------------------------------------------------
# Specializers: how a parameter's annotation applies to an argument, and how specific it is.
# A rank is (tier, position, virtual); lower is more specific.

_TYPE_TIER, _OTHER_TIER, _CLASS_TIER = 0, 1, 2


def _mro_rank(tier: int, cls: type, mro: tuple, spec: type):
    try:
        return (tier, mro.index(spec), 0)
    except ValueError:
        if issubclass(cls, spec):  # a virtual subclass: after the MRO, before object
            return (tier, len(mro) - 1, -1)
        return None


@attrs.frozen
class _ClassSpec:
    cls: type

    def rank(self, arg):
        cls = type(arg)
        return _mro_rank(_CLASS_TIER, cls, cls.__mro__, self.cls)

    def show(self) -> str:
        return "None" if self.cls is type(None) else self.cls.__qualname__


@attrs.frozen
class _TypeSpec:
    cls: type

    def rank(self, arg):
        if not isinstance(arg, type):
            return None
        return _mro_rank(_TYPE_TIER, arg, arg.__mro__, self.cls)

    def show(self) -> str:
        return f"type[{self.cls.__qualname__}]"


@attrs.frozen
class _UnionSpec:
    members: tuple

    def rank(self, arg):
        ranks = [r for r in (m.rank(arg) for m in self.members) if r is not None]
        return min(ranks) if ranks else None

    def show(self) -> str:
        return " | ".join(m.show() for m in self.members)


@attrs.frozen
class _OtherSpec:
    hint: object
    check: Signature = attrs.field(eq=False)  # Signature(hint): plum's (beartype's) check

    def rank(self, arg):
        return (_OTHER_TIER, 0, 0) if self.check.match((arg,)) else None

    def show(self) -> str:
        return repr(self.hint).replace("typing.", "")


_OBJECT = _ClassSpec(object)
_UNIONS = (typing.Union, types.UnionType)


def _is_class(hint) -> bool:
    return isinstance(hint, type) and typing.get_origin(hint) is None and is_faithful(hint)


def _specializer(hint):
    """Classify one resolved plum type hint."""
    if hint is typing.Any or hint is object:
        return _OBJECT
    if hint is None or hint is type(None):
        return _ClassSpec(type(None))
    origin = typing.get_origin(hint)
    if origin in _UNIONS:
        members = tuple(_specializer(h) for h in typing.get_args(hint))
        if all(isinstance(m, (_ClassSpec, _TypeSpec)) for m in members):
            return _UnionSpec(members)
        return _OtherSpec(hint, Signature(hint))
    if origin is type:
        args = typing.get_args(hint)
        if not args or args[0] is typing.Any:
            return _TypeSpec(object) if args else _ClassSpec(type)
        (arg,) = args
        if _is_class(arg):
            return _TypeSpec(arg)
        if typing.get_origin(arg) in _UNIONS and all(_is_class(a) for a in typing.get_args(arg)):
            return _UnionSpec(tuple(_TypeSpec(a) for a in typing.get_args(arg)))
        return _OtherSpec(hint, Signature(hint))
    if _is_class(hint):
        return _ClassSpec(hint)
    return _OtherSpec(hint, Signature(hint))


def _has_type_spec(spec) -> bool:
    if isinstance(spec, _UnionSpec):
        return any(isinstance(m, _TypeSpec) for m in spec.members)
    return isinstance(spec, _TypeSpec)


# --------------------------------------------------------------------------------------------
# Methods


@attrs.frozen(repr=False, eq=False)
class Method:
    """One method of a generic function: what ``gf.methods`` lists.

    ``qualifier`` is ``"primary"``, ``"before"``, ``"after"`` or ``"around"``; ``signature`` is
    the ``plum.Signature`` of its annotations; ``calls_next`` says whether its code may call
    :func:`call_next_method` or :func:`next_method_p`.

    >>> area.methods[0]  # doctest: +SKIP
    <method primary area_of_square(shape: Square) shapes.py:12>
    """

    function: Callable
    qualifier: str
    signature: Signature
    specializers: tuple
    calls_next: bool
    codes: frozenset  # ids of the code objects of its body (nested ones included)
    order: int  # registration order; kept when a redefinition replaces the method

    @property
    def name(self) -> str:
        return getattr(self.function, "__qualname__", None) or repr(self.function)

    @property
    def location(self) -> str:
        """``file:line`` of the method's definition (``?`` if unknown)."""
        code = getattr(inspect.unwrap(self.function), "__code__", None)
        return f"{code.co_filename}:{code.co_firstlineno}" if code else "?"

    def show(self) -> str:
        """``name(param: specializer, ...)``."""
        try:
            names = list(inspect.signature(self.function).parameters)
        except (TypeError, ValueError):
            names = [f"arg{i}" for i in range(len(self.specializers))]
        params = [n if s == _OBJECT and self.signature.types[i] is typing.Any
                  else f"{n}: {s.show()}"
                  for i, (n, s) in enumerate(zip(names, self.specializers))]
        return f"{getattr(self.function, '__name__', self.name)}({', '.join(params)})"

    def __repr__(self) -> str:
        location = self.location.rsplit("/", 1)[-1]
        return f"<method {self.qualifier} {self.show()} {location}>"


def _suffix(fn) -> str:
    """A name suggestion for a method: its first specializer's class, in lower case."""
    try:
        hints = typing.get_type_hints(fn)
        first = next(iter(inspect.signature(fn).parameters))
        hint = hints.get(first)
        return getattr(hint, "__name__", "method").lower()
    except Exception:
        return "method"


def _code_objects(code: types.CodeType):
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _code_objects(const)


def _inspect_body(fn) -> tuple[bool, frozenset]:
    """(may it call call_next_method/next_method_p?, ids of its code objects)."""
    calls_next = False
    codes = set()
    seen = 0
    while fn is not None and seen < 100:  # follow functools.wraps chains
        seen += 1
        code = getattr(fn, "__code__", None)
        if isinstance(code, types.CodeType):
            namespace = getattr(fn, "__globals__", {})
            for c in _code_objects(code):
                codes.add(id(c))
                for name in c.co_names:
                    if name in _NEXT_NAMES or any(namespace.get(name) is f for f in _NEXT_FUNCS):
                        calls_next = True
            for cell in getattr(fn, "__closure__", None) or ():
                try:
                    value = cell.cell_contents
                except ValueError:  # an empty cell
                    continue
                if any(value is f for f in _NEXT_FUNCS):
                    calls_next = True
        fn = getattr(fn, "__wrapped__", None)
    return calls_next, frozenset(codes)


# --------------------------------------------------------------------------------------------
# call_next_method: a thread-local stack of frames, pushed only by methods that may call it


# A frame is a tuple (code, next, args, codes, generic, method): the running method's code
# object, the callable call_next_method reaches (None: no next method), the arguments it was
# called with, the ids of the code objects of its body (nested functions included), and for
# error messages its generic and Method record. call_next_method reads frames with literal
# indices, for speed.
_CODE, _NEXT, _ARGS, _CODES, _GENERIC, _METHOD = range(6)


class _Local(threading.local):
    def __init__(self):
        self.stack: list[tuple] = []


_local = _Local()
_getframe = sys._getframe


def _find_frame(code: types.CodeType, who: str) -> tuple:
    """The innermost running method whose body (or a function nested in it) is ``code``."""
    stack = _local.stack
    key = id(code)
    for frame in reversed(stack):
        if key in frame[_CODES]:
            return frame
    if not stack:
        raise RuntimeError(f"{who}() called outside any method of a generic function")
    raise RuntimeError(
        f"{who}() called from {code.co_name} ({code.co_filename}:{code.co_firstlineno}), "
        f"which is outside the body of the running method ({stack[-1][_METHOD].name}): "
        f"call it from the method's body or a function nested in it")


def call_next_method(*args):
    """Call the next method, with the current method's arguments or with new ``args``.

    From a primary method: the next most specific primary method. From an around method: the
    next around method, or the before, primary and after methods. New arguments are passed as
    they are; they do not choose other methods (as in CLOS, the applicable methods stay those
    of the original arguments).

    >>> @area.dispatch  # doctest: +SKIP
    ... def area_of_rounded(shape: RoundedSquare):
    ...     return call_next_method() - shape.corner_loss()
    """
    code = _getframe(1).f_code
    stack = _local.stack
    if not stack or stack[-1][0] is not code:  # not called from the innermost method's body
        frame = _find_frame(code, "call_next_method")
    else:
        frame = stack[-1]
    next_ = frame[1]
    if next_ is None:
        raise NoNextMethod(frame[_GENERIC].name, frame[_METHOD], frame[_ARGS])
    if not args:
        return next_(*frame[2])
    if len(args) != len(frame[_ARGS]):
        n = len(frame[_ARGS])
        raise TypeError(f"call_next_method() takes 0 or {n} arguments "
                        f"({frame[_GENERIC].name} has {n}), got {len(args)}")
    return next_(*args)


def next_method_p() -> bool:
    """Whether the running method has a next method for :func:`call_next_method`.

    >>> @area.dispatch  # doctest: +SKIP
    ... def area_of_any(shape: Shape):
    ...     return call_next_method() if next_method_p() else 0.0
    """
    return _find_frame(_getframe(1).f_code, "next_method_p")[_NEXT] is not None


_NEXT_NAMES = frozenset(("call_next_method", "next_method_p"))
_NEXT_FUNCS = (call_next_method, next_method_p)


# --------------------------------------------------------------------------------------------
# Effective methods (what the cache holds), generated per arity as the discriminating function
# is: fixed parameters, no *args packing. The templates are few (arities and numbers of
# qualified methods come from code) and cached.

_UNROLL = 8  # up to this many before (after) methods are called one by one, not in a loop


@functools.lru_cache(maxsize=256)
def _template(kind: str, arity: int, n_before: int = 0, n_after: int = 0):
    params = ", ".join(f"a{i}" for i in range(arity))
    packed = f"({params},)" if arity else "()"
    if kind == "step":  # call a method that may call call_next_method, with its frame pushed
        source = (f"def make(function, code, codes, next_, generic, method, local):\n"
                  f"    def step({params}):\n"
                  f"        stack = local.stack\n"
                  f"        stack.append((code, next_, {packed}, codes, generic, method))\n"
                  f"        try:\n"
                  f"            return function({params})\n"
                  f"        finally:\n"
                  f"            stack.pop()\n"
                  f"    return step\n")
    else:  # befores, then the primary chain, then afters
        unrolled = n_before <= _UNROLL and n_after <= _UNROLL
        bs = [f"b{i}" for i in range(n_before)] if unrolled else []
        fs = [f"f{i}" for i in range(n_after)] if unrolled else []
        names = ", ".join(["primary", "befores", "afters", *bs, *fs])
        body = ([f"        {b}({params})\n" for b in bs] if unrolled else
                [f"        for b in befores:\n            b({params})\n"])
        body.append(f"        value = primary({params})\n")
        body += ([f"        {f}({params})\n" for f in fs] if unrolled else
                 [f"        for f in afters:\n            f({params})\n"])
        source = (f"def make({names}):\n"
                  f"    def combined({params}):\n" + "".join(body) +
                  "        return value\n"
                  "    return combined\n")
    namespace: dict = {}
    exec(compile(source, f"<clos_web.clos {kind} {arity}>", "exec"), namespace)
    return namespace["make"]


def _step(generic: Generic, method: Method, next_):
    """Call ``method`` with a frame so that its call_next_method reaches ``next_``."""
    make = _template("step", len(generic.params))
    code = getattr(method.function, "__code__", None)
    return make(method.function, code, method.codes, next_, generic, method, _local)


def _chain(generic: Generic, methods: list, last):
    """The first of ``methods``, each calling the next through call_next_method."""
    next_ = last
    for method in reversed(methods):
        next_ = _step(generic, method, next_) if method.calls_next else method.function
    return next_


def _with_qualified(generic: Generic, befores: tuple, primary, afters: tuple):
    if len(befores) <= _UNROLL and len(afters) <= _UNROLL:
        make = _template("combined", len(generic.params), len(befores), len(afters))
        return make(primary, befores, afters, *befores, *afters)
    make = _template("combined", len(generic.params), _UNROLL + 1, _UNROLL + 1)  # loops
    return make(primary, befores, afters)


class _NoMethod:
    """Cache entry for argument classes without a primary method: raises."""

    __slots__ = ("name", "qualified")

    def __init__(self, name: str, qualified: bool):
        self.name = name
        self.qualified = qualified

    def __call__(self, *args):
        raise NoApplicableMethod(self.name, args, self.qualified)


class _Uncached:
    """Cache entry for argument classes to which a non-faithful method may apply: resolve the
    effective method on every call (its applicability depends on the instance)."""

    __slots__ = ("generic",)

    def __init__(self, generic: Generic):
        self.generic = generic

    def __call__(self, *args):
        return self.generic._combine(self.generic._table.methods, args)[0](*args)


def _sort(found: list) -> list:
    """Sort (ranks, method) pairs: by ranks, ties by plum's signature order, then by order."""
    found.sort(key=lambda pair: (pair[0], pair[1].order))
    out = []
    for _, group in itertools.groupby(found, key=lambda pair: pair[0]):
        rest = [method for _, method in group]
        while len(rest) > 1:  # topological sort by plum's partial order, stable
            for method in rest:
                if not any(o is not method and _below(o.signature, method.signature)
                           for o in rest):
                    break
            else:
                method = rest[0]
            out.append(method)
            rest.remove(method)
        out.extend(rest)
    return out


def _below(a: Signature, b: Signature) -> bool:
    """Whether plum orders ``a`` strictly before (more specific than) ``b``."""
    try:
        return bool(a <= b) and not b <= a
    except Exception:  # beartype cannot compare some hints: incomparable
        return False


# --------------------------------------------------------------------------------------------
# The generic function


@attrs.frozen(eq=False)
class _Table:
    """One immutable snapshot of a generic's state, swapped in whole on every change."""

    methods: tuple  # Method records, in registration order
    layout: tuple  # ((position, keys a class argument by itself?), ...)
    cache_name: str  # the discriminating function's global that holds `cache`
    cache: dict  # nested: one level per layout position, then the effective method
    key: Callable  # args -> the keys of the levels (generated like the function's lookup)
    generation: int
    size: list = attrs.field(factory=lambda: [0])  # entries filled since the last clear


_EMPTY = types.MappingProxyType({})  # what a superseded layout's cache name points at
_RESERVED = "__gf_"
_TRIVIAL_OPS = frozenset(("RESUME", "NOP", "LOAD_CONST", "RETURN_VALUE", "RETURN_CONST",
                          "CACHE", "POP_TOP"))


def _check_declaration(fn) -> tuple[list, str]:
    """The declaration's positional parameters, and the parameter list to generate."""
    if not isinstance(fn, types.FunctionType) or not fn.__name__.isidentifier():
        raise TypeError(f"@generic declares a named function, not {fn!r}")
    params = list(inspect.signature(fn).parameters.values())
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    for p in params:
        if p.kind not in positional or p.default is not inspect.Parameter.empty:
            raise TypeError(
                f"generic {fn.__name__}: parameter {p} is not allowed; a generic function has "
                f"a fixed number of positional parameters (no defaults, *args or keywords)")
        if p.name.startswith(_RESERVED):
            raise TypeError(f"generic {fn.__name__}: parameter names may not start with "
                            f"{_RESERVED!r}")
    for ins in dis.get_instructions(fn):
        if ins.opname not in _TRIVIAL_OPS or (ins.opname == "LOAD_CONST" and
                                              ins.argval is not None):
            raise TypeError(f"generic {fn.__name__}: the body of a declaration is only its "
                            f"docstring; add behaviour as methods (@{fn.__name__}.dispatch)")
    names = [p.name for p in params]
    n_only = sum(p.kind is inspect.Parameter.POSITIONAL_ONLY for p in params)
    signature = names[:n_only] + ["/"] + names[n_only:] if n_only else names
    return names, ", ".join(signature)


class Generic:
    """The state behind a generic function (``gf.__generic__``): name, method table, cache.

    The generic function itself is the generated discriminating function; its attributes
    ``dispatch``, ``before``, ``after``, ``around``, ``remove_method``, ``resolve``,
    ``applicable_methods``, ``methods`` and ``generation`` come from here.

    >>> area.__generic__  # doctest: +SKIP
    <generic area(shape): 2 methods>
    """

    __slots__ = ("name", "qualname", "params", "function", "_table", "_ns", "_lock",
                 "_orders", "_param_list", "_pending")

    def __init__(self, declaration):
        names, param_list = _check_declaration(declaration)
        self.name = declaration.__name__
        self.qualname = declaration.__qualname__
        self.params = tuple(names)
        self._param_list = param_list
        self._lock = threading.RLock()
        self._orders = itertools.count()
        self._ns = {"__builtins__": builtins, "__name__": declaration.__module__,
                    "__gf_type": type, "__gf_isinstance": isinstance,
                    "__gf_KeyError": KeyError, "__gf_miss": self._miss}
        self._table = None
        self._pending = []  # (function, qualifier): methods whose annotations name classes
        # not defined yet (a forward reference); registered at the next call
        self.function = None
        self._install((), initial=declaration)

    def _redeclare(self, declaration) -> None:
        """Declared again (a module re-run, a REPL line): keep the methods, take the new
        docstring and parameter names."""
        names, param_list = _check_declaration(declaration)
        with self._lock:
            self.params = tuple(names)
            self._param_list = param_list
            self.function.__doc__ = declaration.__doc__
            self.function.__annotations__ = dict(declaration.__annotations__)
            self._install(self._table.methods, recompile=True)

    # -- the discriminating function -------------------------------------------------------

    def _compile(self, layout: tuple):
        """Generate the discriminating function and key function for ``layout``."""
        def element(position: int, by_class: bool) -> str:
            p = self.params[position]
            if by_class:  # a class argument keys by itself; another by its class, wrapped so
                # it never equals a class (the wrapping is for the rarer case: no tuple is
                # built where a type[X] position gets the class it expects)
                return f"({p} if __gf_isinstance({p}, __gf_type) else (__gf_type({p}),))"
            return f"__gf_type({p})"

        # One dict level per position (nested dicts: no key tuple to build and hash).
        keys = [element(*e) for e in layout] or ["None"]
        lookup = "".join(f"[{k}]" for k in keys)
        cache_name = "__gf_cache_" + ("_".join(f"{p}{'c' if c else ''}" for p, c in layout)
                                      or "none")
        args = ", ".join(self.params)
        source = (
            f"def {self.name}({self._param_list}):\n"
            f"    try:\n"
            f"        __gf_method = {cache_name}{lookup}\n"
            f"    except __gf_KeyError:\n"
            f"        __gf_method = __gf_miss({args})\n"
            f"    return __gf_method({args})\n"
            f"\n"
            f"def __gf_key({self._param_list}):\n"
            f"    return ({', '.join(keys)},)\n")
        filename = f"<generic {self._ns['__name__']}.{self.qualname} {cache_name}>"
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
        scratch = dict(self._ns)
        exec(compile(source, filename, "exec"), scratch)
        # The functions must read the live namespace, so rebuild them over it.
        function = types.FunctionType(scratch[self.name].__code__, self._ns, self.name)
        key_fn = types.FunctionType(scratch["__gf_key"].__code__, self._ns, "__gf_key")
        return cache_name, function, key_fn

    def _install(self, methods: tuple, initial=None, recompile: bool = False) -> None:
        """Swap in a new table for ``methods`` (called with the lock held)."""
        old = self._table
        layout = _layout(methods, len(self.params))
        if old is not None and layout == old.layout and not recompile:
            cache_name, key_fn, code = old.cache_name, old.key, None
        else:
            cache_name, function, key_fn = self._compile(layout)
            code = function.__code__
            if initial is not None:
                function.__qualname__ = initial.__qualname__
                function.__doc__ = initial.__doc__
                function.__annotations__ = dict(initial.__annotations__)
                function.__dict__.update(
                    __generic__=self, dispatch=self.dispatch, before=self.before,
                    after=self.after, around=self.around, remove_method=self.remove_method,
                    resolve=self.resolve, applicable_methods=self.applicable_methods)
                self.function = function
                code = None
        generation = 0 if old is None else old.generation + 1
        table = _Table(methods, layout, cache_name, {}, key_fn, generation)
        # Order matters for a thread calling meanwhile: a call through the old code and the
        # old cache runs as before the change; a miss resolves with the new table.
        self._table = table
        self._ns[cache_name] = table.cache
        if code is not None:
            self.function.__code__ = code
        if old is not None and old.cache_name != cache_name:
            self._ns[old.cache_name] = _EMPTY
        self.function.methods = methods
        self.function.generation = generation

    def _miss(self, *args):
        """The effective method for a call the cache missed (the caller calls it, outside
        its ``except KeyError``, so errors are not chained to the miss)."""
        if self._pending:
            self._register_pending()
        table = self._table
        keys = table.key(*args)
        entry = _lookup(table.cache, keys)
        if entry is None:
            entry = self._fill(table, keys, args)
        return entry

    def _fill(self, table: _Table, keys: tuple, args: tuple):
        entry, cacheable = self._combine(table.methods, args)
        if not cacheable:
            entry = _Uncached(self)
        level = table.cache
        if table.size[0] >= CACHE_LIMIT:
            level.clear()
            table.size[0] = 0
        for key in keys[:-1]:
            inner = level.get(key)
            if inner is None:
                inner = level[key] = {}
            level = inner
        level[keys[-1]] = entry
        table.size[0] += 1
        return entry

    # -- method combination ----------------------------------------------------------------

    def _applicable(self, methods: tuple, args: tuple):
        """{qualifier: [methods, most specific first]} and whether the answer may be cached."""
        found = {PRIMARY: [], BEFORE: [], AFTER: [], AROUND: []}
        cacheable = True
        for method in methods:
            ranks = []
            class_level = True  # do its class-level (faithful) specializers apply?
            for spec, arg in zip(method.specializers, args):
                rank = spec.rank(arg)
                if rank is None and not isinstance(spec, _OtherSpec):
                    class_level = False
                    break
                ranks.append(rank)
            if not class_level:
                continue
            if any(isinstance(s, _OtherSpec) for s in method.specializers):
                cacheable = False  # applies or not depending on the instances
            if None in ranks or not method.signature.match(args):
                continue
            found[method.qualifier].append((tuple(ranks), method))
        return {q: _sort(pairs) for q, pairs in found.items()}, cacheable

    def _combine(self, methods: tuple, args: tuple):
        """(effective method, cacheable) for ``args``: CLOS standard method combination."""
        found, cacheable = self._applicable(methods, args)
        primaries, befores = found[PRIMARY], found[BEFORE]
        afters, arounds = found[AFTER], found[AROUND]
        if not primaries:
            return _NoMethod(self.name, bool(befores or afters or arounds)), cacheable
        effective = _chain(self, primaries, None)
        if befores or afters:
            effective = _with_qualified(self, tuple(m.function for m in befores), effective,
                                        tuple(m.function for m in reversed(afters)))
        if arounds:
            effective = _chain(self, arounds, effective)
        return effective, cacheable

    # -- registration ----------------------------------------------------------------------

    def _add(self, fn, qualifier: str):
        if fn is self.function:
            raise TypeError(f"{self.name} cannot be a method of itself")
        if getattr(fn, "__name__", None) == self.name:
            # the decorator returns the method itself, so `@area.dispatch def area(...)`
            # (plum's habit) would rebind the name `area` to one method, silently
            raise TypeError(
                f"a method of {self.name} needs a name of its own: `def {self.name}(...)` "
                f"under @{self.name}.{'dispatch' if qualifier == PRIMARY else qualifier} would "
                f"rebind `{self.name}` to this method (the decorator returns the function); "
                f"call it e.g. `{self.name}_{_suffix(fn)}`")
        try:
            method = self._method(fn, qualifier)
        except _ForwardReference:
            # An annotation names a class not defined yet (`stream: Subscription` above the
            # class): register at the next call, as plum does. The cache is emptied meanwhile,
            # so no call can miss the method once its class exists.
            with self._lock:
                self._pending.append((fn, qualifier))
                self._install(self._table.methods)
            return fn
        with self._lock:
            self._insert(method)
        return fn

    def _insert(self, method: Method) -> None:
        """Add ``method`` (or let it replace its older definition); the lock is held."""
        methods = list(self._table.methods)
        for i, old in enumerate(methods):
            if old.qualifier == method.qualifier and old.signature == method.signature:
                methods[i] = attrs.evolve(method, order=old.order)  # redefinition
                break
        else:
            methods.append(method)
        self._install(tuple(methods))

    def _register_pending(self) -> None:
        """Register the methods whose forward references can be resolved now; the others
        raise (a class that never came into being is a bug at the call)."""
        with self._lock:
            pending, self._pending = self._pending, []
            for fn, qualifier in pending:
                try:
                    self._insert(self._method(fn, qualifier))
                except _ForwardReference as exc:
                    self._pending.append((fn, qualifier))
                    raise TypeError(f"cannot read the specializers of {fn.__qualname__}, a "
                                    f"method of {self.name}: {exc}") from None

    def _method(self, fn, qualifier: str) -> Method:
        if not callable(fn):
            raise TypeError(f"a method of {self.name} must be callable, not {fn!r}")
        name = getattr(fn, "__qualname__", repr(fn))
        try:
            params = list(inspect.signature(fn).parameters.values())
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{name}: no signature to dispatch on ({exc})") from None
        P = inspect.Parameter
        positional = [p for p in params if p.kind in (P.POSITIONAL_ONLY, P.POSITIONAL_OR_KEYWORD)]
        n = len(self.params)
        wanted = f"{self.name}({', '.join(self.params)}) takes {n} positional parameters"
        if (len(positional) != n or any(p.kind is P.VAR_POSITIONAL for p in params)
                or any(p.kind is P.KEYWORD_ONLY and p.default is P.empty for p in params)):
            raise TypeError(f"{wanted}; the method {name}{inspect.signature(fn)} does not fit")
        try:
            signature = Signature.from_callable(fn)
            types_ = [resolve_type_hint(t) for t in signature.types]
            for t in types_:
                _check_resolvable(t)
            specializers = tuple(_specializer(t) for t in types_)
        except (NameError, BeartypeForwardRef) as exc:
            raise _ForwardReference(str(exc)) from None
        except Exception as exc:  # unresolvable annotations, a default of the wrong type...
            raise TypeError(f"cannot read the specializers of {name}: {exc}") from None
        calls_next, codes = _inspect_body(fn)
        if calls_next and qualifier in (BEFORE, AFTER):
            raise TypeError(f"{name}: a {qualifier} method has no next method; it may not call "
                            f"call_next_method() or next_method_p()")
        return Method(fn, qualifier, signature, specializers, calls_next, codes,
                      next(self._orders))

    def dispatch(self, fn):
        """Add (or redefine) a primary method: ``defmethod``.

        >>> @area.dispatch  # doctest: +SKIP
        ... def area_of_square(shape: Square):
        ...     return shape.side ** 2
        """
        return self._add(fn, PRIMARY)

    def before(self, fn):
        """Add a before method: runs before the primary method, most specific first.

        >>> @area.before  # doctest: +SKIP
        ... def check(shape: Shape):
        ...     shape.validate()
        """
        return self._add(fn, BEFORE)

    def after(self, fn):
        """Add an after method: runs after the primary method, least specific first.

        >>> @area.after  # doctest: +SKIP
        ... def audit(shape: Shape):
        ...     log.info("area of %s", shape)
        """
        return self._add(fn, AFTER)

    def around(self, fn):
        """Add an around method: wraps everything else; calls :func:`call_next_method`.

        >>> @area.around  # doctest: +SKIP
        ... def cached(shape: Shape):
        ...     return shape.cached_area or call_next_method()
        """
        return self._add(fn, AROUND)

    def remove_method(self, fn) -> Method:
        """Remove the method whose function is ``fn`` (what its decorator returned), or a
        :class:`Method` from ``gf.methods``; return the removed record.

        >>> area.remove_method(area_of_square)  # doctest: +SKIP
        <method primary area_of_square(shape: Square) shapes.py:12>
        """
        with self._lock:
            methods = self._table.methods
            kept = tuple(m for m in methods if m is not fn and m.function is not fn)
            if len(kept) == len(methods):
                raise ValueError(f"{fn!r} is not a method of {self.name}")
            removed = next(m for m in methods if m not in kept)
            self._install(kept)
        return removed

    # -- introspection ---------------------------------------------------------------------

    def _check_arity(self, args: tuple) -> None:
        if len(args) != len(self.params):
            raise TypeError(f"{self.name}({', '.join(self.params)}) takes {len(self.params)} "
                            f"argument{'s' * (len(self.params) != 1)}, got {len(args)}")

    def resolve(self, *args):
        """The effective method for ``args``: what a call would run (through the cache).

        It is the method's function itself when one primary method applies that never calls
        ``call_next_method`` and no qualified method applies. Raises
        :class:`NoApplicableMethod`.

        >>> area.resolve(Square(2)) is area_of_square  # doctest: +SKIP
        True
        """
        self._check_arity(args)
        entry = self._miss(*args)  # the cache's entry (filled if missing), as a call finds it
        if isinstance(entry, _Uncached):
            entry = self._combine(self._table.methods, args)[0]
        if isinstance(entry, _NoMethod):
            entry(*args)  # raises
        return entry

    def applicable_methods(self, *args) -> list[Method]:
        """The methods that apply to ``args``, in the order they run (arounds, befores,
        primaries most specific first, afters least specific first).

        >>> [m.function for m in area.applicable_methods(Square(2))]  # doctest: +SKIP
        [check, area_of_square, audit]
        """
        self._check_arity(args)
        if self._pending:
            self._register_pending()
        found, _ = self._applicable(self._table.methods, args)
        return found[AROUND] + found[BEFORE] + found[PRIMARY] + found[AFTER][::-1]

    def cached(self, *args):
        """The cache entry for ``args``' classes, or None (for tests and introspection)."""
        table = self._table
        return _lookup(table.cache, table.key(*args))

    @property
    def methods(self) -> tuple:
        if self._pending:
            self._register_pending()
        return self._table.methods

    @property
    def generation(self) -> int:
        return self._table.generation

    @property
    def cache_size(self) -> int:
        """The number of effective methods in the cache."""
        table = self._table
        level = [table.cache]
        for _ in range(max(len(table.layout), 1) - 1):
            level = [inner for d in level for inner in d.values()]
        return sum(len(d) for d in level)

    def __repr__(self) -> str:
        n = len(self._table.methods) if self._table else 0
        return f"<generic {self.name}({', '.join(self.params)}): {n} method{'s' * (n != 1)}>"


def _lookup(cache: dict, keys: tuple):
    level = cache
    for key in keys:
        level = level.get(key)
        if level is None:
            return None
    return level


def _layout(methods: tuple, arity: int) -> tuple:
    """The argument positions the cache key uses: those some method specialises (not on
    ``object``; a non-faithful specializer alone does not need one), each with whether a
    ``type[X]`` specializer there makes a class argument key by itself."""
    layout = []
    for i in range(arity):
        specs = [m.specializers[i] for m in methods]
        if any(s != _OBJECT and not isinstance(s, _OtherSpec) for s in specs):
            layout.append((i, any(_has_type_spec(s) for s in specs)))
    return tuple(layout)


# --------------------------------------------------------------------------------------------
# Public entry points


_DECLARED: dict[tuple[str, str], Generic] = {}  # module-level generics, by module and name
_DECLARED_LOCK = threading.Lock()


def generic(declaration):
    """Declare a generic function (``defgeneric``): the body is only the docstring.

    The result is the generic's discriminating function, named and documented like the
    declaration, with ``dispatch``/``before``/``after``/``around`` to add methods,
    ``remove_method``, ``resolve``, ``applicable_methods``, ``methods`` and ``generation``.

    Declaring again a module-level generic with the same number of parameters (re-running
    its module, ``importlib.reload``, the same line at the REPL) returns the existing generic
    with its methods -- including those other modules added -- and takes the new docstring and
    parameter names, as CLOS's ``defgeneric`` does. A generic declared inside a function body
    is new each time.

    >>> @generic
    ... def area(shape):
    ...     \"\"\"The area of a shape.\"\"\"
    >>> @area.dispatch
    ... def area_of_int(shape: int):
    ...     return shape * shape
    >>> area(3)
    9
    """
    module, qualname = getattr(declaration, "__module__", None), \
        getattr(declaration, "__qualname__", "")
    if not isinstance(module, str) or "<locals>" in qualname:
        return Generic(declaration).function
    with _DECLARED_LOCK:
        old = _DECLARED.get((module, qualname))
        if old is not None and len(old.params) == len(_check_declaration(declaration)[0]):
            old._redeclare(declaration)
            return old.function
        state = _DECLARED[(module, qualname)] = Generic(declaration)
        return state.function


def is_generic(obj) -> bool:
    """Whether ``obj`` is a generic function made by :func:`generic`.

    >>> is_generic(area), is_generic(len)  # doctest: +SKIP
    (True, False)
    """
    return isinstance(getattr(obj, "__generic__", None), Generic)


def describe(gf) -> str:
    """A text listing the generic's docstring and every method, with its qualifier,
    signature and source location.

    >>> print(describe(area))  # doctest: +SKIP
    area(shape): generic function, 2 methods (generation 2)
        The area of a shape.
      before   check(shape: Shape)               shapes.py:20
      primary  area_of_square(shape: Square)     shapes.py:12
    """
    if not is_generic(gf):
        raise TypeError(f"{gf!r} is not a generic function")
    state = gf.__generic__
    methods = state.methods
    n = len(methods)
    lines = [f"{state.name}({', '.join(state.params)}): generic function, {n} "
             f"method{'s' * (n != 1)} (generation {state.generation})"]
    doc = inspect.cleandoc(gf.__doc__ or "")
    lines += [f"    {line}".rstrip() for line in doc.splitlines()]
    ordered = sorted(methods, key=lambda m: (_QUALIFIERS.index(m.qualifier), m.order))
    shown = [(m.qualifier, m.show(), m.location) for m in ordered]
    width = max((len(s) for _, s, _ in shown), default=0)
    lines += [f"  {q:<8} {s:<{width}}  {loc}" for q, s, loc in shown]
    return "\n".join(lines)
