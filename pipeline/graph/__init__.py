"""The graph's runtime: stage context and sockets (:mod:`~pipeline.graph.context`), the stage
lifecycle (:mod:`~pipeline.graph.stage`), stage processes (:mod:`~pipeline.graph.process`), and
the supervisor (:mod:`~pipeline.graph.supervisor`) with its readiness and stall checks
(:mod:`~pipeline.graph.readiness`) and runtime stream control (:mod:`~pipeline.graph.streams`)."""
