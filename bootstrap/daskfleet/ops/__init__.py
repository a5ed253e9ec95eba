"""Operations on deployed clusters: finding and removing leaked resources, and an operator's view of a cluster."""
