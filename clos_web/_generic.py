"""The project's one plum dispatcher.

Every generic function of clos_web is declared once with ``@dispatcher.abstract`` (a
``defgeneric``, with its docstring) in the module that owns its protocol, and extended with
``@fn.dispatch`` (a ``defmethod``). We never use plum's global ``dispatch``: its registry is
keyed by function name, so unrelated functions that share a name (two libraries' ``write``)
would be merged.

This dispatcher keys functions by name too: it is clos_web's own. An application declares its
own generic functions on its own ``plum.Dispatcher()``; it extends ours with ``fn.dispatch``.

Methods must not annotate their return type: plum converts every result to a method's return
annotation, and that costs more than the dispatch itself.
"""

from plum import Dispatcher

dispatcher = Dispatcher()

__all__ = ["dispatcher"]
