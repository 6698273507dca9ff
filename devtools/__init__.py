"""Development tooling, never deployed: the GitHub emulator, a throwaway redis-server and
process helpers, shared by the test suite, ``make demo`` and ``make bench``.

Production code (``apps/``, ``tformance/``, ``scheduler/``) never imports from here.
"""
