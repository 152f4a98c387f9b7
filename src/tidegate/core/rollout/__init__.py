"""Rollouts, pure: the statistics (stats), the per-window judge (judge) and the step machine (machine).

The control plane's runner (tidegate.control.rollouts) feeds them metrics and
`now`, and carries out the actions the machine asks for; nothing here does I/O.
"""
