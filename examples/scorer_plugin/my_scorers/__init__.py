"""An example scorer package outside phf (docs/scorers.md#write-your-own-scorer)."""
