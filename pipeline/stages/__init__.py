"""The graph's stages, one class each with the lifecycle of :class:`pipeline.graph.stage.Stage`:
:mod:`~pipeline.stages.source` (decode into a shared-memory ring), :mod:`~pipeline.stages.infer`
(batch and run the frame model), :mod:`~pipeline.stages.analytics` (tracks, forecasts, zones,
alerts) and :mod:`~pipeline.stages.publish` (annotate, encode, publish events)."""
