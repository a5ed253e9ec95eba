"""What every node's Dask configuration says: TLS required, tls:// only, TLS >= 1.2, HTTPS dashboard."""

from __future__ import annotations

from pathlib import Path

from daskfleet.node.daskconfig import TlsFiles, render_dask_config


def test_rendered_config_is_pinned():
    files = TlsFiles(Path("/run/x/ca.pem"), Path("/run/x/cert.pem"), Path("/run/x/key.pem"))
    config = render_dask_config("worker", files)
    assert config == {
        "distributed": {
            "comm": {
                "require-encryption": True,
                "default-scheme": "tls",
                "tls": {"ca-file": "/run/x/ca.pem", "min-version": 1.2,
                        "worker": {"cert": "/run/x/cert.pem", "key": "/run/x/key.pem"}},
            },
            "scheduler": {
                "dashboard": {"tls": {"ca-file": "/run/x/ca.pem", "cert": "/run/x/cert.pem", "key": "/run/x/key.pem"}},
                "http": {"routes": [
                    "distributed.http.scheduler.prometheus", "distributed.http.scheduler.info",
                    "distributed.http.scheduler.json", "distributed.http.health", "distributed.http.statics",
                ]},
            },
        }
    }
