"""daskfleet: secured, reproducible Dask clusters."""
