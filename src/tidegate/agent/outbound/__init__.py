"""Outbound calls to services: `router.py` chooses the instance of every call to a service name.

Imports the runtime, the capability base and `tidegate.core`; no capability
package (what it needs of them, such as the lane rules and warm-up weights,
comes in through protocols and arguments).
"""
