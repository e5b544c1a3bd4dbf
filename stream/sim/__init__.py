"""The synthetic world: deterministic video with exact ground truth, its data sets, and a test
RTSP camera.

People-like figures act out scripted actions over a seeded textured room, next to a few
non-person objects; everything is a pure function of the seed. Import from the submodule that
defines a name: :mod:`~stream.sim.world` (types, scripts), :mod:`~stream.sim.motion` (poses),
:mod:`~stream.sim.render` (frames and ground truth), :mod:`~stream.sim.scenes` (canned scenes),
:mod:`~stream.sim.sample` (videos, demo sample, motion data), :mod:`~stream.sim.datasets`
(training data for the sim perception model), :mod:`~stream.sim.camera` (the RTSP test camera).
"""
