"""Adaptive workers and idle shutdown: pure decisions (core, idle, policy) and the scheduler-side runner.

Backends that apply decisions live where their platform lives (``daskfleet.aws.workers``,
``daskfleet.local.workers``); the composition root (``daskfleet.cli``) picks one, so this
package imports neither.
"""
