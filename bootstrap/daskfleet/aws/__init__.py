"""AWS adapters: the agent's source on an instance, a user's certificate fetch, log shipping, user data."""
