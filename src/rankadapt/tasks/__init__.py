"""Task families: how examples are read, encoded, batched and scored."""
