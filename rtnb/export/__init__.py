"""Export a pipeline.

A standalone script (:meth:`rtnb.Pipeline.export`), the headless runtime
it calls (:mod:`rtnb.export.runtime`), and exporting the pipeline a notebook defines
(:func:`export_notebook`, also ``rtnb export notebook.ipynb``).
"""

from rtnb.export.notebook import export_notebook

__all__ = ["export_notebook"]
