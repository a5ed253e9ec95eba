"""The user's side: connect a ``distributed.Client`` to a cluster with this user's client certificate."""
