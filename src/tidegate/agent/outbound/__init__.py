"""Outbound calls to service names: where one goes (router), what one call decides (call), its errors.

`call.OutboundPipeline` is the sans-I/O call pipeline that every HTTP client
instrumentor (and the gateway's proxy) drives; `errors` builds the errors that
are also the client library's own. This package imports `tidegate.core`,
`tidegate.errors` and itself only: what it needs of the capabilities (stability's
admission, lossless offline's drain notices, the metrics) it takes through the
protocols declared in `call`.
"""
