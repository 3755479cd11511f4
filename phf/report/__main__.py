"""``python -m phf.report DIR ...``: the ``phf-report`` command line."""

from phf.report.cli import main

if __name__ == "__main__":
    main()
