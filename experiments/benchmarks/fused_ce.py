"""The chunked LM head + cross-entropy lever: now ``phf.chunked_ce`` (``trainer.chunked_ce``, opt-in);
re-exported here for the benchmarks that import it by this name."""

from phf.chunked_ce import ChunkedLinearCE, chunked_token_ce

__all__ = ["ChunkedLinearCE", "chunked_token_ce"]
