"""Tests of the CrossGuard policy pack in infra/policy, calling its policies as the engine does."""
