"""Example apps built on clos_web (``examples/hello.py`` is a script; ``tabletop`` a package)."""
