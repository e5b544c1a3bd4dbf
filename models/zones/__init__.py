"""Zones, counting lines and alert rules for one stream (pure logic, no torch).

- :mod:`models.zones.rules`: the configured types :class:`Zone`, :class:`Line`,
  :class:`AlertRule`;
- :mod:`models.zones.geometry`: box anchors, point-in-polygon and path-crossing tests;
- :mod:`models.zones.analytics`: :class:`ZoneAnalytics`, the per-frame step that turns tracked
  boxes and forecasts into ``zone.*``, ``line.cross`` and ``alert`` events.

The package re-exports nothing: import from the submodules.
"""
