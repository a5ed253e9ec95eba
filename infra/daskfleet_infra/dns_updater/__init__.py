"""The scheduler DNS updater's Lambda code: ``handler.py`` is packaged alone (standard library and boto3 only)."""
