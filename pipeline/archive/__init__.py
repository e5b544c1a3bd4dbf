"""Batch archives: ``vigil process`` with many inputs, resumable, locally or on Ray.

- :mod:`pipeline.archive.inputs`: files, folders, globs and ``@list`` files -> inputs.
- :mod:`pipeline.archive.manifest`: ``DIR/manifest.jsonl`` and its records.
- :mod:`pipeline.archive.item`: one input processed into its own output folder.
- :mod:`pipeline.archive.engines`: who processes the inputs (this process, workers, Ray).
- :mod:`pipeline.archive.run`: the run (lock, resume, signals, progress, summary).
"""
