"""Files: atomic writes and pictures (artifacts), CSV reading (csvfiles), the embedding cache, the memory-mapped
pool store, weights files and result.json."""
