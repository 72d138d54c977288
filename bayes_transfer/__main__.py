"""``python -m bayes_transfer ...``: the ``bayes-transfer`` command, for an environment
whose scripts folder is not on ``PATH`` (a venv used without activating it)."""

from bayes_transfer.cli import main

if __name__ == "__main__":
    main()
