"""SimNet: the project's own small perception network, trained on the synthetic world.

- :mod:`models.simnet.net`: the network and the constants its outputs are read with;
- :mod:`models.simnet.infer`: :class:`SimPerception` (the inference stage), output decoding,
  the shipped weights and their registry entry;
- :mod:`models.simnet.train`: training targets, flip augmentation and the loss (imported only by
  ``scripts/train_sim.py`` and the tests, never by product code).

The package re-exports nothing: import from the submodules.
"""
