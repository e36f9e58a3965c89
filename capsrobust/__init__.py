"""capsrobust: are capsule networks more robust than CNNs, and can their reconstructions catch attacks?

The package is a pipeline that flows one way: data → recipes → models → training → checkpoints → evaluation.
The command line (``capsrobust.cli``) is a thin skin over the functions in these modules.
"""

__version__ = "0.1.0"
