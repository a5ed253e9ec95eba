"""The local cluster: a whole secured cluster on one machine, through the same agent path as instances."""
