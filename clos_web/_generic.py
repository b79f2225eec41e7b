"""The project's one plum dispatcher.

Every generic function of clos_web is declared once with ``@dispatcher.abstract`` (a
``defgeneric``, with its docstring) in the module that owns its protocol, and extended with
``@fn.dispatch`` (a ``defmethod``). We never use plum's global ``dispatch``: its registry is
keyed by function name, so unrelated functions that share a name (two libraries' ``write``)
would be merged.

Methods must not annotate their return type: plum converts every result to a method's return
annotation, and that costs more than the dispatch itself.
"""

from plum import Dispatcher

dispatcher = Dispatcher()

__all__ = ["dispatcher"]
