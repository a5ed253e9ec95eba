"""The node agent: what every machine runs (spec, sources, TLS-only Dask config, scheduler or worker)."""
