"""``python -m api.cli``: the ``ledger`` command."""

from api.cli import main

# Guarded: processes that multiprocessing spawns (``ledger verify --jobs``) import this
# module again, as ``__mp_main__``, and must not run the command a second time.
if __name__ == "__main__":
    main()
