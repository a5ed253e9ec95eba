"""A stand-in for the certificate vendor's compiled dependency in the program's tests (infra.evaluate points
DASKFLEET_VENDOR_DEPS here): the program packs it beside daskfleet; nothing here is ever deployed or imported."""
