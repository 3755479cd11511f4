"""The data pipeline: source → segment → score → transform → pack (see ``phf.data.pipeline``)."""
