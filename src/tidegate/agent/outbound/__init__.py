"""Outbound calls to service names: where one goes (`router`), what one call decides (`call`), its errors (`errors`).

`call.OutboundPipeline` is the sans-I/O call pipeline that every HTTP client
instrumentor (and the gateway's proxy) drives, through the attempt loop in
`drive` (sync and async); `router.OutboundRouter` chooses the instance;
`errors` builds the errors that are also the client library's own. This
package imports the runtime, the capability base, `tidegate.core`,
`tidegate.errors` and itself only: what it needs of the capabilities
(stability's admission, lossless offline's drain notices, the metrics, lossless
online's called services, lane rules and warm-up weights) comes in through
protocols and arguments.
"""
