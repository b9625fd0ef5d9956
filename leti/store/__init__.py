"""The Parquet store: every table's schema (``tables``), the one reader of latency and op-latency
rows with an explicit policy (``reader``), and imports of published data (``ingest``)."""
