"""The work on one batch of rows, with no Spark: decode, detect, score, caption, fetch."""
