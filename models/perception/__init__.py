"""One interface over every frame model the inference stage can run (a *perceiver*).

Import from the submodules; this package re-exports nothing (so importing a leaf never loads
the models):

- :mod:`models.perception.base`: the :class:`Perceiver` protocol, :class:`StrideSchedule`,
  :func:`group_by_size`, :func:`resolve_device`, :func:`init_kwargs` (a leaf: no torch, no model);
- :mod:`models.perception.composite`: :class:`CompositePerceiver` (detect + segment + pose
  merged per frame) and :func:`align_poses`;
- :mod:`models.perception.build`: :func:`build_perceiver`, :func:`build_perceiver_from_config`,
  :class:`DetectorPerceiver` and :func:`perceive`.
"""
