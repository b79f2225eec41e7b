"""The demo: a real-time multiplayer card table in the browser, on clos_web's public API.

Run ``make demo`` (or ``python -m examples.tabletop --port 8080``) and open
http://localhost:8080. :mod:`.game` holds the rules, :mod:`.app` the web layer, ``static/``
the page.
"""

from .app import Tabletop, tabletop
from .game import Game, GameError, Table

__all__ = ["Tabletop", "tabletop", "Game", "GameError", "Table"]
