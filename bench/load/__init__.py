"""The fleet load benchmark: `make load` / `python -m bench.load` (see ``__main__``)."""
