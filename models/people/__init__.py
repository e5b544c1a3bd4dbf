"""People analytics: who is who across frames, what their poses did, what they will do next.

- :mod:`models.people.tracking`: ByteTrack-style multi-object tracker (and IDF1 for evaluation);
- :mod:`models.people.pose_buffer`: per-track pose history, resampling and window normalisation;
- :mod:`models.people.action`: the action forecaster (LSTM over pose windows);
- :mod:`models.people.ntu`: reader and action mapping of the NTU RGB+D skeleton data set;
- :mod:`models.people.analytics`: :class:`PeopleAnalytics`, the per-frame people step that ties
  the above together and emits ``track.*`` and ``action.forecast`` events.

The package re-exports nothing: import from the submodules.
"""
