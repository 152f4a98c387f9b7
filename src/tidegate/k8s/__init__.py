"""tidegate on Kubernetes: the mutating admission webhook and the manifests.

`inject` decides what a pod gets (pure: pod in, JSONPatch out), `webhook` serves it
over HTTPS (stdlib), `manifests` builds the YAML of `tidegate k8s manifests`, and
`command` is `tidegate k8s ...`. May import the agent's settings (names, defaults),
`tidegate.core` and the standard library, and PyYAML; never the agent's runtime.
"""
