"""capsrobust: are capsule networks more robust than CNNs, and can their reconstructions catch attacks?

The package is a pipeline that flows one way, one sub-package per stage: ``models`` → ``training`` → ``attacks`` →
``evaluation`` → ``detection`` → ``figures`` → ``reporting``, with ``benchmark`` and the command line
(``capsrobust.cli``, a thin skin over the functions of the stages) on top. docs/layout.md has the map.
"""

__version__ = "0.3.0"
